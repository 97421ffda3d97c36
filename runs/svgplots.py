"""Plots for the run report, drawn as inline SVG by hand: no plotting library, no script,
nothing fetched when the page opens.

Each function returns one ``<svg>`` element as text; every label is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

FONT = 'font-family="system-ui, sans-serif" font-size="11"'


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def bin_counts(values: Sequence[float], lo: float, hi: float, bins: int) -> list[int]:
    """How many of ``values`` fall in each of ``bins`` equal bins over [lo, hi] (the last bin
    holds ``hi``; values outside are clamped into the end bins)."""
    counts = [0] * bins
    width = (hi - lo) / bins
    for v in values:
        if math.isnan(v):
            continue
        i = int((v - lo) / width) if width > 0 else 0
        counts[min(max(i, 0), bins - 1)] += 1
    return counts


def _ticks(lo: float, hi: float) -> list[float]:
    step = 0.1 if hi - lo > 0.4 else 0.05
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 4) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def histogram(
    series: Sequence[tuple[str, Sequence[float], str]],
    *,
    lo: float,
    hi: float,
    bins: int = 40,
    lines: Sequence[tuple[float, str, str]] = (),
    title: str = "",
    width: int = 720,
    height: int = 260,
) -> str:
    """A stacked histogram: ``series`` are ``(label, values, colour)``, stacked in that order;
    ``lines`` are ``(x, label, colour)`` drawn as vertical lines (the threshold, quantiles)."""
    left, right, top, bottom = 44, 12, 34, 30
    pw, ph = width - left - right, height - top - bottom
    counts = [bin_counts(vals, lo, hi, bins) for _, vals, _ in series]
    totals = [sum(c[i] for c in counts) for i in range(bins)]
    ymax = max(totals + [1])
    bw = pw / bins

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * pw

    parts = [f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafafa" '
             'stroke="#ccc"/>']  # fmt: skip
    for i in range(bins):
        base = 0
        for (label, _, colour), c in zip(series, counts, strict=True):
            if not c[i]:
                continue
            y, h = top + ph * (1 - (base + c[i]) / ymax), ph * c[i] / ymax
            parts.append(f'<rect x="{left + i * bw + 0.5:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" '
                         f'height="{h:.1f}" fill="{colour}"><title>{escape(label)}: {c[i]} '
                         f'in [{lo + i * (hi - lo) / bins:.3f}, '
                         f'{lo + (i + 1) * (hi - lo) / bins:.3f})</title></rect>')  # fmt: skip
            base += c[i]
    parts += _axes(left, top, pw, ph, ymax, [(x_of(t), _num(t)) for t in _ticks(lo, hi)])
    for k, (x, label, colour) in enumerate(lines):
        if lo <= x <= hi:
            xp, ty = x_of(x), top + 12 + 13 * (k % 3)
            anchor = "end" if xp > left + pw * 0.7 else "start"
            dx = -4 if anchor == "end" else 4
            parts.append(f'<line x1="{xp:.1f}" x2="{xp:.1f}" y1="{top}" y2="{top + ph}" '
                         f'stroke="{colour}" stroke-width="2" stroke-dasharray="5 3"/>'
                         f'<text x="{xp + dx:.1f}" y="{ty}" fill="{colour}" '
                         f'text-anchor="{anchor}">{escape(label)}</text>')  # fmt: skip
    parts += _legend(
        [
            (f"{label} ({sum(c)})", colour)
            for (label, _, colour), c in zip(series, counts, strict=True)
        ],
        left,
    )
    return _svg(width, height, title, parts)


def _axes(
    left: float, top: float, pw: float, ph: float, ymax: int, xticks: list[tuple[float, str]]
) -> list[str]:
    base = top + ph
    out = [f'<line x1="{left}" x2="{left + pw}" y1="{base}" y2="{base}" stroke="#555"/>']
    for x, label in xticks:
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" stroke="#555"/>'
                   f'<text x="{x:.1f}" y="{base + 16}" text-anchor="middle">{label}</text>')  # fmt: skip
    for frac in (0.0, 0.5, 1.0):
        value = ymax * frac
        if frac == 0.5 and ymax < 2:
            continue
        y = base - ph * frac
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">'
                   f'{_num(value)}</text>')  # fmt: skip
    return out


def _legend(entries: list[tuple[str, str]], left: float) -> list[str]:
    out, x = [], left
    for label, colour in entries:
        out.append(f'<rect x="{x:.0f}" y="8" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{x + 14:.0f}" y="17">{escape(label)}</text>')  # fmt: skip
        x += 24 + 6.5 * len(label)
    return out


def hbars(rows: Sequence[tuple[str, float, str]], *, title: str = "", width: int = 720) -> str:
    """Horizontal bars: ``rows`` are ``(label, value, text shown at the bar's end)``."""
    left, bar, gap = 150, 16, 6
    height = 10 + len(rows) * (bar + gap)
    vmax = max([v for _, v, _ in rows] + [1e-9])
    pw = width - left - 150
    parts = []
    for i, (label, value, note) in enumerate(rows):
        y = 6 + i * (bar + gap)
        w = max(pw * value / vmax, 1.0) if value > 0 else 0.0
        parts.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end">{escape(label)}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar}" fill="#4c78a8"/>'
                     f'<text x="{left + w + 6:.1f}" y="{y + 12}">{escape(note)}</text>')  # fmt: skip
    return _svg(width, height, title, parts)


def _svg(width: int, height: int, title: str, parts: list[str]) -> str:
    # Inline SVG in HTML needs no namespace attribute: the page names no URL at all.
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'{FONT}><title>{escape(title)}</title>{"".join(parts)}</svg>')  # fmt: skip
