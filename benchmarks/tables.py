"""Tables for the terminal, the JSON record, and the extrapolation to full ImageNet."""

from __future__ import annotations

from typing import Any

from harness import Result, Stage, speed_ratio

# ILSVRC2012 at full size (docs/archives.md); the test archive's size is the shown 13 GB.
FULL = {"train": 1_281_167, "val": 50_000, "test": 100_000, "xml": 544_546}
FULL_BYTES = {"train": 147_897_477_120, "val": 6_744_924_160, "test": 13_000_000_000,
              "small": 20_000_000 + 2_200_000 + 2_568_634}


def _mb(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:,.0f} MB"


def _rate(n: float) -> str:
    return f"{n:,.0f}" if n >= 100 else f"{n:,.1f}"


def stage_table(stage: Stage, results: dict[str, Result]) -> list[str]:
    lines = [f"== {stage.title}",
             f"   {stage.items:,} {stage.unit}"
             + (f", {stage.bytes / 1e6:,.0f} MB in" if stage.bytes else "")]
    base = stage.baseline
    base_label = results[base].label.split(" (")[0] if base and base in results else None
    unit = {"images": "img/s", "XML files": "XML/s"}.get(stage.unit, stage.unit + "/s")
    head = (f"   {'':<58} {'s':>7} {unit:>10} {'MB/s':>7} {'peak RSS':>9} "
            f"{'1 proc':>8}  {'speed vs ' + base_label if base_label else ''}")
    lines.append(head)
    for key, res in results.items():
        if res.error or not res.samples:
            lines.append(f"   {res.label:<58} FAILED: {(res.error or 'no run').splitlines()[0]}")
            continue
        s = res.seconds
        mbs = f"{stage.bytes / 1e6 / s:,.0f}" if stage.bytes else "-"
        ratio = ""
        if base and key != base:
            r = speed_ratio(results, key, base)
            ratio = f"{r:.2f}x" if r is not None else "n/a"
        elif base:
            ratio = "baseline"
        mark = "*" if res.ours else " "
        lines.append(f" {mark} {res.label:<58} {s:7.2f} {_rate(stage.items / s):>10} {mbs:>7} "
                     f"{_mb(res.tree_rss):>9} {_mb(res.max_rss):>8}  {ratio}")
    for t in stage.targets:
        value, ok = t.check(results)
        lines.append(f"   target: {t.label}: {value} {'PASS' if ok else 'MISS'}")
    for label, check in stage.checks:
        lines.append(f"   check: {label}: {'yes' if check() else 'NO'}")
    for note in stage.notes:
        lines.append(f"   note: {note}")
    return lines


def stage_json(stage: Stage, results: dict[str, Result]) -> dict[str, Any]:
    out: dict[str, Any] = {"title": stage.title, "unit": stage.unit, "items": stage.items,
                           "bytes": stage.bytes, "baseline": stage.baseline, "contenders": {}}
    for key, res in results.items():
        entry: dict[str, Any] = {"label": res.label, "ours": res.ours, "error": res.error,
                                 "runs": [{"seconds": round(s.seconds, 4), "max_rss": s.max_rss,
                                           "tree_rss": s.tree_rss} for s in res.samples]}
        if res.samples:
            entry.update(seconds=round(res.seconds, 4), max_rss=res.max_rss,
                         tree_rss=res.tree_rss, items_per_s=round(stage.items / res.seconds, 1))
            if stage.bytes:
                entry["mb_per_s"] = round(stage.bytes / 1e6 / res.seconds, 1)
            if stage.baseline and stage.baseline in results:
                r = speed_ratio(results, key, stage.baseline)
                entry["speed_vs_baseline"] = round(r, 3) if r else None
        if res.report is not None:
            entry["report"] = res.report
        out["contenders"][key] = entry
    out["targets"] = []
    for t in stage.targets:
        value, ok = t.check(results)
        out["targets"].append({"target": t.label, "value": value, "holds": ok})
    out["checks"] = [{"check": label, "holds": check()} for label, check in stage.checks]
    return out


def _ours(all_results: dict[str, dict[str, Result]], stage: str, key: str = "ours"
          ) -> Result | None:
    res = all_results.get(stage, {}).get(key)
    return res if res and res.samples else None


def extrapolate(all_results: dict[str, dict[str, Result]], counts: dict[str, int],
                arch_bytes: dict[str, int], out_bytes: dict[str, int]) -> list[dict[str, Any]]:
    """Seconds and disk at full ImageNet counts, scaled per image (per XML, per byte)."""
    rows: list[dict[str, Any]] = []
    imgs = counts["train"] + counts["val"] + counts["test"]
    full_imgs = FULL["train"] + FULL["val"] + FULL["test"]
    full_tv = FULL["train"] + FULL["val"]
    tv = counts["train"] + counts["val"]

    def add(stage: str, seconds: float | None, disk: float | None, how: str) -> None:
        if seconds is not None:
            rows.append({"stage": stage, "seconds": round(seconds), "disk_bytes": disk,
                         "scaled": how})

    def scaled(res: Result, factor: float) -> float:
        """Start-up once, the rest of the run `factor` times."""
        return s0 + max(0.0, res.seconds - s0) * factor

    start = _ours(all_results, "startup", "cli")
    s0 = start.seconds if start else 0.0
    if r := _ours(all_results, "verify"):
        total = sum(arch_bytes.values())
        full = sum(FULL_BYTES.values())
        add("verify (full MD5)", scaled(r, full / total), 0, "per archive byte")
    if r := _ours(all_results, "extract"):
        src = arch_bytes["train"] + arch_bytes["val"] + arch_bytes["test"]
        full = FULL_BYTES["train"] + FULL_BYTES["val"] + FULL_BYTES["test"]
        disk = out_bytes.get("extract", 0) * full / src if src else None
        add("extract", scaled(r, full_imgs / imgs), disk, "per image")
    if r := _ours(all_results, "valtree"):
        add("valtree", scaled(r, FULL["val"] / counts["val"]), 0, "per val image")
    if r := _ours(all_results, "flatten"):
        add("flatten", scaled(r, full_tv / tv), 0, "per image (hard links)")
    if r := _ours(all_results, "synsets"):
        add("synsets", r.seconds, 30_000, "constant")
    if r := _ours(all_results, "bbox"):
        own = r.report.get("seconds") if isinstance(r.report, dict) else None
        xml_s = (own or max(0.0, r.seconds - s0)) / counts["xml"]
        disk = out_bytes.get("bbox", 0) * FULL["xml"] / counts["xml"]
        add("bbox", s0 + xml_s * FULL["xml"], disk, "per XML file")
    if r := _ours(all_results, "tfrecord"):
        src = arch_bytes["train"] + arch_bytes["val"]
        full = FULL_BYTES["train"] + FULL_BYTES["val"]
        disk = out_bytes.get("tfrecord", 0) * full / src if src else None
        add("tfrecord", scaled(r, full_tv / tv), disk, "per image")
    parts = [row for row in rows if row["stage"] in
             ("extract", "valtree", "flatten", "synsets", "bbox", "tfrecord")]
    if len(parts) == 6:
        rows.append({"stage": "prepare --only all (sum of the stages)",
                     "seconds": sum(p["seconds"] for p in parts),
                     "disk_bytes": sum(p["disk_bytes"] or 0 for p in parts),
                     "scaled": "sum"})
    if r := _ours(all_results, "prepare"):
        add("prepare --only all (measured run, scaled per image)", scaled(r, full_imgs / imgs),
            None, "per image")
    return rows


def extrapolation_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["== extrapolation to full ILSVRC2012 (1,281,167 train, 50,000 val, 100,000 test "
             "images, 544,546 box XMLs), same machine and file system",
             f"   {'stage':<54} {'time':>10} {'disk written':>13}  scaled"]
    for row in rows:
        disk = "-" if row["disk_bytes"] is None else _size(row["disk_bytes"])
        lines.append(f"   {row['stage']:<54} {_hms(row['seconds']):>10} {disk:>13}  "
                     f"{row['scaled']}")
    return lines


def _size(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:,.1f} GB"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else ("0" if n == 0 else f"{n / 1e3:,.0f} kB")


def _hms(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
