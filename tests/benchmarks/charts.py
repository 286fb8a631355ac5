"""Charts the benchmarks draw of their own figures: plain SVG, no plotting library, for ``docs/benchmarks.md``.

Two kinds: grouped horizontal bars (pools side by side, one group per
case) and lines (a figure as something grows: workers, tasks in the store).
"""

from __future__ import annotations

import html
import os

#: One colour per series, in order; the first is localabort's wherever it is drawn.
COLOURS = ("#1f6feb", "#6e7781", "#d4a72c", "#2da44e", "#cf222e", "#8250df")
FONT = 'font-family="sans-serif"'


def _text(x, y, words, anchor="start", extra="", size=12):
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} font-size="{size}" {extra}>'
            f"{html.escape(str(words))}</text>")  # fmt: skip


def _save(path, width, height, parts):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'viewBox="0 0 {width} {height}">\n<rect width="100%" height="100%" fill="white"/>\n')  # fmt: skip
        f.write("\n".join(parts))
        f.write("\n</svg>\n")
    return path


def bars(path, title, groups, note="", reference=None):
    """Grouped bars: ``groups`` is ``{group: {series: value}}``; ``reference`` draws a dashed line at that value."""
    series = list(dict.fromkeys(name for values in groups.values() for name in values))
    colour = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(series)}
    left, right, bar, gap, head = 150, 90, 16, 10, 18
    width = 760
    plot = width - left - right
    top = 48
    height = top + sum(head + len(values) * bar + gap for values in groups.values()) + 40
    most = max([value for values in groups.values() for value in values.values()] + [reference or 0]) or 1.0
    parts = [_text(12, 22, title, extra='font-weight="bold"', size=14)]
    if note:
        parts.append(_text(12, 38, note, extra='fill="#57606a"'))
    y = top
    for group, values in groups.items():
        parts.append(_text(12, y + 12, group, extra='font-weight="bold"'))
        y += head
        for name, value in values.items():
            length = plot * value / most
            parts.append(_text(left - 8, y + 12, name, anchor="end"))
            box = f'x="{left}" y="{y + 2}" width="{length:.1f}" height="{bar - 4}"'
            parts.append(f'<rect {box} fill="{colour[name]}"/>')
            parts.append(_text(left + length + 6, y + 12, f"{value:.2f}x"))
            y += bar
        y += gap
    if reference is not None:
        x = left + plot * reference / most
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{y - gap + 4}" stroke="#24292f" '
                     'stroke-dasharray="4 3"/>')  # fmt: skip
        parts.append(_text(x, y + 8, f"target {reference:g}x", anchor="middle", extra='fill="#24292f"'))
    return _save(path, width, height + 10, parts)


def lines(path, title, xs, series, xlabel, ylabel, note=""):
    """Lines: ``series`` is ``{name: [value per x]}``, ``xs`` the x labels (evenly spaced)."""
    width, height = 660, 320
    left, right, top, bottom = 70, 230, 48, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    most = max(value for values in series.values() for value in values) * 1.1 or 1.0
    parts = [_text(12, 22, title, extra='font-weight="bold"', size=14)]
    if note:
        parts.append(_text(12, 38, note, extra='fill="#57606a"'))
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#8c959f"/>')
    parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8c959f"/>')
    for k in range(5):
        value = most * k / 4
        y = top + plot_h - plot_h * k / 4
        parts.append(_text(left - 6, y + 4, f"{value:,.0f}", anchor="end", extra='fill="#57606a"'))
        if k:
            parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eaeef2"/>')
    step = plot_w / max(1, len(xs) - 1)
    for i, x in enumerate(xs):
        parts.append(_text(left + i * step, top + plot_h + 18, x, anchor="middle"))
    parts.append(_text(left + plot_w / 2, height - 8, xlabel, anchor="middle", extra='fill="#57606a"'))
    parts.append(_text(14, top + plot_h / 2, ylabel, anchor="middle",
                       extra=f'fill="#57606a" transform="rotate(-90 14 {top + plot_h / 2:.1f})"'))  # fmt: skip
    for n, (name, values) in enumerate(series.items()):
        colour = COLOURS[n % len(COLOURS)]
        points = " ".join(f"{left + i * step:.1f},{top + plot_h - plot_h * v / most:.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for i, v in enumerate(values):
            x, y = left + i * step, top + plot_h - plot_h * v / most
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
        parts.append(_text(left + plot_w + 10, top + 14 + 18 * n, name, extra=f'fill="{colour}"'))
    return _save(path, width, height, parts)
