"""Server-rendered SVG charts for the dashboard: no JavaScript, no CDN, readable offline and by screen readers."""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Sequence

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 600
HEIGHT = 240
MARGIN = {"left": 64, "right": 56, "top": 40, "bottom": 48}  # top: the title, then a line legend below it
BAR = "#417690"  # the admin's own palette
LINE = "#ba2121"
GRID = "#ddd"
TEXT = "#333"
FONT_SIZE = 11
# A tick label's width is estimated, not measured (the server has no fonts to measure with). 0.65 em per
# character is at or above the widest digits of the sans-serif fonts browsers pick (DejaVu Sans 0.636 em,
# Arial/Liberation Sans 0.556 em), so labels spaced by the estimate never touch on screen.
CHAR_EM = 0.65
LABEL_GAP = 6  # at least this much space between two tick labels


def _num(value) -> float:
    return float(value) if isinstance(value, (int, float, Decimal)) else 0.0


def nice_max(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above value, so that the axis ticks are round numbers."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def short_number(value: float) -> str:
    """1234567 → 1.2M: tick labels stay narrow."""
    magnitude = abs(value)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.3g}" if magnitude < 1000 else f"{value:.0f}"


def _frame(key: str, title: str, description: str, body: list[str], width: int, height: int) -> SafeString:
    title_id = f"chart-{escape(key)}-title"
    desc_id = f"chart-{escape(key)}-desc"
    return mark_safe(
        f'<svg class="dashboard-chart" id="chart-{escape(key)}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'viewBox="0 0 {width} {height}" width="100%" aria-labelledby="{title_id} {desc_id}" '
        f'font-family="sans-serif" font-size="{FONT_SIZE}" fill="{TEXT}">'
        f'<title id="{title_id}">{escape(title)}</title><desc id="{desc_id}">{escape(description)}</desc>'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
        f'{escape(title)}</text>'
        + "".join(body) + "</svg>"
    )


def _y_axis(top: float, scale_max: float, x: float, plot_h: float, label: str, *, right: bool = False,
            grid_to: float | None = None) -> list[str]:
    out = []
    for i in range(5):
        value = scale_max * i / 4
        y = top + plot_h - plot_h * i / 4
        if grid_to is not None:
            out.append(f'<line x1="{x:.1f}" x2="{grid_to:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        anchor, dx = ("start", 4) if right else ("end", -4)
        out.append(f'<text x="{x + dx:.1f}" y="{y + 4:.1f}" text-anchor="{anchor}">'
                   f'{escape(short_number(value))}</text>')
    cx = x + (44 if right else -48)
    cy = top + plot_h / 2
    out.append(f'<text class="axis-label" x="{cx:.1f}" y="{cy:.1f}" text-anchor="middle" '
               f'transform="rotate(-90 {cx:.1f} {cy:.1f})">{escape(label)}</text>')
    return out


def _plot_area(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the plot inside a column or line chart's margins."""
    left, top = MARGIN["left"], MARGIN["top"]
    return left, top, width - left - MARGIN["right"], height - top - MARGIN["bottom"]


def label_width(text: str, font_size: float = FONT_SIZE) -> float:
    """A generous estimate of how wide `text` prints, in the chart's own units (see CHAR_EM)."""
    return len(text) * font_size * CHAR_EM


def tick_indices(labels: Sequence[str], plot_w: float) -> list[int]:
    """Which of n evenly slotted labels (centred in their slots) the x axis prints, so that none overlap.

    The same step throughout, the smallest that fits the widest label and a gap, counted back from the
    last label: the most recent day is always labelled, the first only when it falls on the step (a
    first and last label forced in would collide). Unlabelled slots keep their day in the tooltip.
    """
    n = len(labels)
    if n == 0:
        return []
    slot = plot_w / n
    widest = max(label_width(label) for label in labels)
    every = max(1, math.ceil((widest + LABEL_GAP) / slot))
    return list(range((n - 1) % every, n, every))


def _x_axis(labels: Sequence[str], x_label: str, *, n: int, width: int, height: int) -> list[str]:
    """The bottom axis of a column or line chart (n slots): labels that never overlap, the line, the axis title."""
    left, top, plot_w, plot_h = _plot_area(width, height)
    step = plot_w / n
    out = [f'<text class="x-tick" x="{left + i * step + step / 2:.1f}" y="{top + plot_h + 14:.1f}" '
           f'text-anchor="middle">{escape(labels[i])}</text>' for i in tick_indices(labels, plot_w)]
    out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="{TEXT}"/>')
    out.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">'
               f'{escape(x_label)}</text>')
    return out


def column_chart(*, key: str, title: str, x_label: str, y_label: str, labels: Sequence[str],
                 values: Sequence, line: Sequence | None = None, line_label: str = "",
                 width: int = WIDTH, height: int = HEIGHT) -> SafeString:
    """Columns per label (e.g. per day) on the left axis, and optionally a line on a right axis of its own."""
    left, top, plot_w, plot_h = _plot_area(width, height)
    nums = [_num(v) for v in values]
    scale = nice_max(max(nums, default=0))
    body = _y_axis(top, scale, left, plot_h, y_label, grid_to=left + plot_w)
    n = max(len(nums), 1)
    step = plot_w / n
    bar_w = max(step * 0.7, 1)
    for i, (label, value) in enumerate(zip(labels, nums, strict=False)):
        h = plot_h * value / scale
        x = left + i * step + (step - bar_w) / 2
        body.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}" fill="{BAR}">'
                    f'<title>{escape(label)}: {escape(_plain(value))}</title></rect>')
    body += _x_axis(labels, x_label, n=n, width=width, height=height)
    description = f"{y_label} by {x_label}"
    if line is not None:
        line_nums = [_num(v) for v in line]
        line_scale = nice_max(max(line_nums, default=0))
        points = " ".join(f"{left + i * step + step / 2:.1f},{top + plot_h - plot_h * v / line_scale:.1f}"
                          for i, v in enumerate(line_nums))
        body.append(f'<polyline points="{points}" fill="none" stroke="{LINE}" stroke-width="2"/>')
        body += _y_axis(top, line_scale, left + plot_w, plot_h, line_label, right=True)
        body.append(f'<text x="{left + plot_w}" y="{top - 6}" text-anchor="end" fill="{LINE}">— {escape(line_label)}'
                    f'</text>')
        description += f"; line: {line_label} (right axis)"
    return _frame(key, title, description, body, width, height)


def line_chart(*, key: str, title: str, x_label: str, y_label: str, labels: Sequence[str], values: Sequence,
               width: int = WIDTH, height: int = HEIGHT) -> SafeString:
    """One line over labels (e.g. a rate per day), with a dot per point carrying its value."""
    left, top, plot_w, plot_h = _plot_area(width, height)
    nums = [_num(v) for v in values]
    scale = nice_max(max(nums, default=0))
    body = _y_axis(top, scale, left, plot_h, y_label, grid_to=left + plot_w)
    n = max(len(nums), 1)
    step = plot_w / n
    coords = [(left + i * step + step / 2, top + plot_h - plot_h * v / scale) for i, v in enumerate(nums)]
    if coords:
        body.append(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in coords)}" fill="none" '
                    f'stroke="{LINE}" stroke-width="2"/>')
    for (x, y), label, value in zip(coords, labels, nums, strict=False):
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{LINE}"><title>{escape(label)}: '
                    f'{escape(_plain(value))}</title></circle>')
    body += _x_axis(labels, x_label, n=n, width=width, height=height)
    return _frame(key, title, f"{y_label} by {x_label}", body, width, height)


def bar_list(*, key: str, title: str, x_label: str, y_label: str, labels: Sequence[str], values: Sequence,
             width: int = WIDTH, row_height: int = 20) -> SafeString:
    """Horizontal bars, one per label (chains, sellers), longest first as given, the value printed at the end."""
    left, top, bottom, right = 150, MARGIN["top"], 36, 80
    nums = [_num(v) for v in values]
    height = top + bottom + row_height * max(len(nums), 1)
    plot_w = width - left - right
    scale = nice_max(max(nums, default=0))
    body = [f'<text class="axis-label" x="12" y="{top - 6}" text-anchor="start">{escape(y_label)}</text>']
    for i, (label, value) in enumerate(zip(labels, nums, strict=False)):
        y = top + i * row_height
        w = plot_w * value / scale
        body.append(f'<text x="{left - 6}" y="{y + row_height * 0.7:.1f}" text-anchor="end">{escape(label)}</text>')
        body.append(f'<rect x="{left}" y="{y + 2}" width="{w:.1f}" height="{row_height - 4}" fill="{BAR}">'
                    f'<title>{escape(label)}: {escape(_plain(value))}</title></rect>')
        body.append(f'<text x="{left + w + 4:.1f}" y="{y + row_height * 0.7:.1f}">{escape(short_number(value))}</text>')
    if not nums:
        body.append(f'<text x="{left}" y="{top + 14}">No data yet.</text>')
    axis_y = top + row_height * max(len(nums), 1)
    body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{axis_y}" y2="{axis_y}" stroke="{TEXT}"/>')
    for i in range(5):
        x = left + plot_w * i / 4
        body.append(f'<text x="{x:.1f}" y="{axis_y + 12}" text-anchor="middle">{escape(short_number(scale * i / 4))}'
                    f'</text>')
    body.append(f'<text class="axis-label" x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                f'{escape(x_label)}</text>')
    return _frame(key, title, f"{x_label} by {y_label}", body, width, height)


def _plain(value: float) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
