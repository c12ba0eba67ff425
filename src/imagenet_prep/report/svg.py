"""Inline SVG plots written by hand: grouped histograms and a bar chart, no plotting library.

Each function returns one <svg> element that scales with its container (viewBox)
and carries an id, so a test can find it and a browser needs nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

import numpy as np

W, H = 420, 210
LEFT, RIGHT, TOP, BOTTOM = 46, 10, 28, 34
COLORS = {"train": "#3b6ea8", "val": "#d9822b"}
OTHER = "#777777"


def _num(v: float) -> str:
    if abs(v) >= 100 or float(v).is_integer():
        return f"{v:,.0f}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def _frame(plot_id: str, title: str, body: list[str], y_max: float, y_unit: str) -> str:
    """The <svg> with its title, y axis (3 ticks) and the plot body."""
    ph = H - TOP - BOTTOM
    parts = [f'<svg id="{escape(plot_id)}" class="plot" viewBox="0 0 {W} {H}" role="img">',
             f"<title>{escape(title)}</title>",
             f'<text x="{LEFT}" y="16" class="pt">{escape(title)}</text>']
    for frac in (0.0, 0.5, 1.0):
        y = TOP + ph * (1 - frac)
        parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="grid"/>')
        parts.append(f'<text x="{LEFT - 4}" y="{y + 4:.1f}" class="yt">'
                     f"{_num(y_max * frac)}{y_unit}</text>")
    parts += body
    parts.append("</svg>")
    return "".join(parts)


def histogram(plot_id: str, title: str, series: dict[str, Sequence[float]], *, bins: int = 20,
              fmt: Callable[[float], str] = _num, clip: float = 0.995) -> str:
    """Share of each series per bin, bars side by side; values past the `clip` quantile of
    all values fall in the last bin (marked +), so one huge outlier cannot flatten the rest."""
    values = [np.asarray(v, dtype=float) for v in series.values() if len(v)]
    if not values:
        return _frame(plot_id, title + " (no data)", [], 1, "%")
    every = np.concatenate(values)
    lo, hi = float(every.min()), float(np.quantile(every, clip))
    clipped = hi < float(every.max())
    if hi <= lo:
        lo, hi = lo - 0.5, lo + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    shares = {}
    for name, v in series.items():
        arr = np.clip(np.asarray(v, dtype=float), lo, hi)
        counts, _ = np.histogram(arr, bins=edges)
        shares[name] = counts * 100.0 / max(1, len(arr))
    top = max(max((float(s.max()) for s in shares.values() if len(s)), default=1.0), 1.0)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / bins
    bar = slot * 0.9 / max(1, len(shares))
    body = []
    for j, (name, share) in enumerate(shares.items()):
        color = COLORS.get(name, OTHER)
        for i, s in enumerate(share):
            if not s:
                continue
            h = ph * s / top
            x = LEFT + i * slot + slot * 0.05 + j * bar
            body.append(f'<rect x="{x:.1f}" y="{TOP + ph - h:.1f}" width="{bar:.1f}" '
                        f'height="{h:.1f}" fill="{color}"><title>{escape(name)} '
                        f"{fmt(edges[i])}-{fmt(edges[i + 1])}: {s:.1f}%</title></rect>")
    for i, anchor in ((0, "start"), (bins // 2, "middle"), (bins, "end")):
        x = LEFT + i * slot
        label = fmt(edges[i]) + ("+" if clipped and i == bins else "")
        body.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 14}" class="xt" '
                    f'text-anchor="{anchor}">{escape(label)}</text>')
    for j, (name, v) in enumerate(series.items()):
        x = W - RIGHT - 156 + j * 80
        body.append(f'<rect x="{x}" y="8" width="10" height="10" fill="{COLORS.get(name, OTHER)}"/>'
                    f'<text x="{x + 14}" y="17" class="lg">{escape(name)} ({len(v):,})</text>')
    return _frame(plot_id, title, body, top, "%")


def bar_chart(plot_id: str, title: str, items: Sequence[tuple[str, int]], *,
              color: str = COLORS["train"]) -> str:
    """One bar per item, tallest first; each bar's tooltip names it.  The x axis says how
    many items there are and which ones are the extremes."""
    ranked = sorted(items, key=lambda kv: (-kv[1], kv[0]))
    if not ranked:
        return _frame(plot_id, title + " (no data)", [], 1, "")
    top = max(1, ranked[0][1])
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    slot = pw / len(ranked)
    gap = slot * 0.15 if slot >= 4 else 0.0
    body = []
    for i, (name, n) in enumerate(ranked):
        h = ph * n / top
        body.append(f'<rect x="{LEFT + i * slot:.2f}" y="{TOP + ph - h:.1f}" '
                    f'width="{max(slot - gap, 0.5):.2f}" height="{h:.1f}" fill="{color}">'
                    f"<title>{escape(name)}: {n:,}</title></rect>")
    counts = [n for _, n in ranked]
    median = float(np.median(counts))
    body.append(f'<text x="{LEFT}" y="{H - BOTTOM + 14}" class="xt0">{len(ranked):,} classes; '
                f"max {counts[0]:,} ({escape(ranked[0][0])}), median {_num(median)}, "
                f"min {counts[-1]:,} ({escape(ranked[-1][0])})</text>")
    return _frame(plot_id, title, body, top, "")
