"""The page: one self-contained HTML file (inline CSS, SVG and data-URI thumbnails, no script).

Every section has an id, every count sits in an element with a data-value, and
every thumbnail says what it is (data-section, data-split, data-wnid, data-file),
so tests, and users with a few lines of code, can read the page back.
"""

from __future__ import annotations

from collections import Counter
from html import escape

import numpy as np

from imagenet_prep.report import svg
from imagenet_prep.report.model import ContactClass, Report, Row, Special, Thumb

GENERATOR = "imagenet-prep report"

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1240px;padding:0 16px 40px;color:#1d1d1f;background:#fff}
h1{font-size:22px;margin:16px 0 0}h2{font-size:18px;margin:22px 0 8px;
border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:13.5px;margin:0 0 3px}
header p{margin:2px 0 6px}code,.path{font-family:ui-monospace,Menlo,Consolas,monospace;
font-size:12.5px}nav a{margin-right:14px;color:#3b6ea8}p{margin:6px 0}
table{border-collapse:collapse}td,th{padding:2px 10px;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}
th{font-weight:600;background:#f6f6f6}.muted{color:#777}
.ok{color:#17713a;font-weight:600}.bad{color:#b3261e;font-weight:600}
.cols{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}.side{flex:1 1 280px}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:10px}
svg.plot{width:100%;height:auto;background:#fafafa;border:1px solid #eee}
svg .pt{font-size:13px;font-weight:600}svg .yt{font-size:10px;text-anchor:end;fill:#555}
svg .xt{font-size:10px;fill:#555}svg .xt0{font-size:10px;fill:#555}
svg .lg{font-size:10px}svg .grid{stroke:#e2e2e2;stroke-width:1}
.cards{display:flex;flex-wrap:wrap;gap:8px}
.card{margin:0;padding:4px;border:1px solid #e6e6e6;border-radius:4px;width:170px;
font-size:12px}.card img{width:96px;height:96px;object-fit:contain;display:block}
.cls{margin:6px 0;padding:4px 8px;border:1px solid #e6e6e6;border-radius:4px}
.sheet{display:flex;flex-wrap:wrap;align-items:center;gap:3px}
.sheet .lbl{font-size:11px;color:#555;width:28px}.sheet .sep{width:10px}
.sheet img{width:60px;height:60px;object-fit:cover;border:2px solid transparent}
img.mismatch{border-color:#b3261e!important}.broken{font-size:11px;color:#b3261e;width:96px}
"""


def _num(n: int | None) -> str:
    return "" if n is None else f"{n:,}"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:,.1f} {unit}"
    return f"{n} B"


def _attrs(**kw: object) -> str:
    return "".join(f' {k.replace("_", "-")}="{escape(str(v))}"' for k, v in kw.items()
                   if v is not None)


def thumb_html(t: Thumb) -> str:
    data = dict(data_section=t.section, data_split=t.split, data_wnid=t.wnid, data_file=t.file,
                data_box_wnid=t.box_wnid)
    if t.uri is None:
        why = escape(t.error or "")
        return f'<span class="broken"{_attrs(**data)}>{escape(t.file)}: {why}</span>'
    mismatch = t.box_wnid is not None and t.box_wnid != t.wnid
    title = t.file + (f" (box XML names {t.box_wnid})" if mismatch else "")
    cls = ' class="mismatch"' if mismatch else ""
    return (f'<img src="{t.uri}" alt="{escape(t.file)}" title="{escape(title)}"{cls}'
            f"{_attrs(**data)}>")


def _summary(r: Report) -> list[str]:
    out = ['<section id="summary"><h2>Summary</h2><div class="cols">',
           '<table id="counts"><thead><tr><th>what</th><th>count</th><th>classes</th>'
           "<th>bytes</th><th>notes</th></tr></thead><tbody>"]
    for row in r.rows:
        out.append(_row(row))
    out.append('</tbody></table><div class="side">')
    out += _check(r)
    out += _timings(r)
    out.append("</div></div></section>")
    return out


def _row(row: Row) -> str:
    return (f'<tr data-key="{escape(row.key)}"><td>{escape(row.what)}</td>'
            f'<td class="num count"{_attrs(data_value=row.count)}>{_num(row.count)}</td>'
            f'<td class="num classes"{_attrs(data_value=row.classes)}>{_num(row.classes)}</td>'
            f'<td class="num bytes"{_attrs(data_value=row.bytes)}>{_size(row.bytes)}</td>'
            f'<td class="muted">{escape(row.detail)}</td></tr>')


def _check(r: Report) -> list[str]:
    out = []
    if r.problems:
        out.append('<div id="read-problems" class="bad"><p>reading the shards for this page met '
                   f"{len(r.problems):,} damaged records:</p><ul>"
                   + "".join(f"<li><code>{escape(p)}</code></li>" for p in r.problems[:30])
                   + "</ul></div>")
    return out + _check_result(r)


def _check_result(r: Report) -> list[str]:
    if r.check is None:
        return ['<p id="check" data-ok="unknown">check: not run (<code>--no-check</code>); run '
                f"<code>imagenet-prep check {escape(r.dataset)}</code></p>"]
    problems = r.check["problems"]
    state = "ok" if r.check["ok"] else "bad"
    text = ("OK" if r.check["ok"] else f"{len(problems):,} problems")
    what = ", ".join(r.check.get("checked", []))
    out = [f'<div id="check" data-ok="{str(r.check["ok"]).lower()}" '
           f'data-problems="{len(problems)}"><p>check: <span class="{state}">{text}</span> '
           f'<span class="muted">({escape(what)})</span></p>']
    if problems:
        out.append("<ul>" + "".join(f"<li><code>{escape(p)}</code></li>" for p in problems[:30]))
        if len(problems) > 30:
            out.append(f"<li>... and {len(problems) - 30:,} more</li>")
        out.append("</ul>")
    for s in r.check.get("skipped", []):
        out.append(f'<p class="bad">left out of the TFRecords: {escape(s["split"])}/'
                   f'{escape(s["name"])}: {escape(s["error"])}</p>')
    out.append("</div>")
    return out


def _timings(r: Report) -> list[str]:
    t = r.timings
    if not t:
        return ['<p id="timings" class="muted">timings: not recorded (<code>prepare</code> '
                "records each stage's time)</p>"]
    out = ['<div id="timings">']
    runs = t.get("prepare", [])
    if runs:
        stages = list(dict.fromkeys(s for run in runs for s, _ in run["stages"]))
        head = "".join(f'<th class="num">run {i + 1}</th>' for i in range(len(runs)))
        out.append(f"<p><code>prepare</code> runs on this dataset (seconds; a rerun only "
                   f"finishes what is missing):</p><table><thead><tr><th>stage</th>{head}"
                   "</tr></thead><tbody>")
        for stage in stages + ["total"]:
            cells = []
            for run in runs:
                secs = run["seconds"] if stage == "total" else dict(run["stages"]).get(stage)
                cells.append(f'<td class="num"{_attrs(data_value=secs)}>'
                             f'{"" if secs is None else f"{secs:,.1f}"}</td>')
            out.append(f'<tr data-stage="{escape(stage)}"><td>{escape(stage)}</td>'
                       + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    tf = t.get("tfrecord")
    if tf and tf.get("shards_written"):
        out.append(f"<p>last TFRecord run: {tf['shards_written']:,} shards, "
                   f"{tf.get('images', 0):,} images in {tf.get('seconds', 0):,.1f} s "
                   f"({tf.get('images_per_s', 0):,.0f} images/s, "
                   f"{tf.get('mb_per_s', 0):,.0f} MB/s)</p>")
    out.append("</div>")
    return out


def _distributions(r: Report) -> list[str]:
    out = ['<section id="distributions"><h2>Distributions</h2>']
    samples = {s: v.sample for s, v in r.views.items()}
    for split, smp in samples.items():
        out.append(f'<p class="sampled" data-split="{split}" data-sampled="{smp.count}" '
                   f'data-total="{smp.total}">{split}: sampled {smp.count:,} of {smp.total:,} '
                   f"images (seed {r.seed}; image headers only, no decoding)"
                   + (f"; {len(smp.unreadable)} unreadable" if smp.unreadable else "") + "</p>")
    plots = []
    for split, view in r.views.items():
        plots.append(svg.bar_chart(f"plot-per-class-{split}", f"{split} images per class",
                                   list(view.counts.items()), color=svg.COLORS[split]))
    widths = {s: v.widths for s, v in samples.items()}
    heights = {s: v.heights for s, v in samples.items()}
    aspect = {s: list(np.asarray(v.widths, float) / np.maximum(1, v.heights))
              for s, v in samples.items()}
    kb = {s: [b / 1000 for b in v.sizes] for s, v in samples.items()}
    plots.append(svg.histogram("plot-width", "width (pixels)", widths))
    plots.append(svg.histogram("plot-height", "height (pixels)", heights))
    plots.append(svg.histogram("plot-aspect", "aspect ratio (w / h)", aspect))
    plots.append(svg.histogram("plot-filesize", "file size (kB)", kb))
    out.append('<div class="plots">' + "".join(plots) + "</div></section>")
    return out


def _special(s: Special) -> str:
    cell = thumb_html(s.thumb) if s.thumb else '<span class="muted">no thumbnail</span>'
    why = escape(s.reason) + (f": <code>{escape(s.error)}</code>" if s.error else "")
    return (f'<figure class="card" data-split="{s.split}" data-file="{escape(s.name)}" '
            f'data-reason="{escape(s.reason)}" data-found-by="{s.found_by}">{cell}'
            f"<figcaption>{s.split}: <code>{escape(s.name)}</code><br>{why}</figcaption>"
            "</figure>")


def _converted(r: Report) -> list[str]:
    out = ['<section id="converted"><h2>Converted or left-out files</h2>',
           f'<p id="converted-basis">{escape(r.specials_basis)}</p>',
           f'<p>files: <span id="converted-count" data-value="{r.specials_total}">'
           f"{r.specials_total:,}</span>"]
    if r.specials_total > len(r.specials):
        out.append(f" (the first {len(r.specials):,} are shown)")
    out.append("</p>")
    if r.specials:
        out.append('<div class="cards">' + "".join(_special(s) for s in r.specials) + "</div>")
    out.append("</section>")
    return out


def _contact(r: Report) -> list[str]:
    val_shown = [t for c in r.contact for t in c.val]
    checked = [t for t in val_shown if t.box_wnid is not None]
    wrong = [t for t in checked if t.box_wnid != t.wnid]
    k = max((len(c.train) for c in r.contact), default=0)
    out = ['<section id="contact"><h2>Contact sheet</h2>',
           f"<p>{len(r.contact)} classes drawn with seed {r.seed}; for each, up to {k} training "
           "images beside up to as many validation images filed under the same class. A "
           "validation row that looks unlike its training row means the validation images sit in "
           "the wrong class: the model then trains fine and evaluates at chance.</p>"]
    if checked:
        state = "bad" if wrong else "ok"
        out.append(f'<p id="box-check" class="{state}" data-checked="{len(checked)}" '
                   f'data-wrong="{len(wrong)}">{len(wrong)} of {len(checked)} validation images '
                   "shown are filed under another class than their box XML names"
                   + (" (red frames)" if wrong else "") + "</p>")
    for c in r.contact:
        out.append(_contact_class(c))
    out.append("</section>")
    return out


def _contact_class(c: ContactClass) -> str:
    counts = " · ".join(f"{s} {n:,}" for s, n in c.counts.items())
    wrong = Counter(t.box_wnid for t in c.val if t.box_wnid is not None and t.box_wnid != c.wnid)
    note = ""
    if wrong:
        named = ", ".join(f"{w} ({n})" for w, n in wrong.most_common(3))
        note = (f' <span class="bad">{sum(wrong.values())} of {len(c.val)} validation images '
                f"here are {named} by their box XMLs</span>")
    rows = []
    for split, thumbs in (("train", c.train), ("val", c.val)):
        cells = "".join(thumb_html(t) for t in thumbs) or '<span class="muted">none</span>'
        rows.append(f'<span class="lbl">{split}</span><span class="row" data-split="{split}" '
                    f'style="display:contents">{cells}</span>')
    return (f'<div class="cls" id="class-{c.wnid}" data-wnid="{c.wnid}"><h3><code>{c.wnid}'
            f'</code> {escape(c.description)} <span class="muted">({counts})</span>{note}</h3>'
            '<div class="sheet">' + '<span class="sep"></span>'.join(rows) + "</div></div>")


def render(r: Report) -> str:
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta name="generator" content="{GENERATOR} {escape(r.version)}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>ImageNet dataset report: {escape(r.dataset)}</title>",
             f"<style>{CSS}</style></head><body>",
             f'<header><h1>ImageNet dataset report</h1><p class="path">{escape(r.dataset)}</p>',
             '<nav><a href="#summary">summary</a><a href="#distributions">distributions</a>'
             '<a href="#converted">converted files</a><a href="#contact">contact sheet</a>'
             "</nav></header>"]
    parts += _summary(r)
    parts += _distributions(r)
    parts += _converted(r)
    parts += _contact(r)
    parts.append(f'<footer class="muted"><p>written by imagenet-prep {escape(r.version)}</p>'
                 "</footer></body></html>")
    return "\n".join(parts) + "\n"
