"""The dashboard's SVG charts: x-axis tick labels that never overlap, at any number of days."""
from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from ops.monitoring import charts

_, _, PLOT_W, _ = charts._plot_area(charts.WIDTH, charts.HEIGHT)


def day_labels(n: int) -> list[str]:
    """n consecutive days as the dashboard labels them, crossing a month end."""
    return [(date(2026, 11, 20) + timedelta(days=i)).strftime("%m-%d") for i in range(n)]


def label_boxes(labels: list[str], indices: list[int], plot_w: float) -> list[tuple[float, float]]:
    """(left, right) of each printed label, centred in its slot as _x_axis draws it."""
    slot = plot_w / len(labels)
    return [((i + 0.5) * slot - charts.label_width(labels[i]) / 2, (i + 0.5) * slot + charts.label_width(labels[i]) / 2)
            for i in indices]


@pytest.mark.parametrize("n", range(1, 121))
def test_tick_indices_never_overlap_and_always_label_the_last_day(n):
    labels = day_labels(n)
    indices = charts.tick_indices(labels, PLOT_W)
    assert indices and indices[-1] == n - 1
    assert indices == sorted(set(indices)) and 0 <= indices[0]
    boxes = label_boxes(labels, indices, PLOT_W)
    for (_, right), (left, _) in zip(boxes, boxes[1:], strict=False):
        assert left - right >= charts.LABEL_GAP, f"n={n}: labels {indices} overlap"


@pytest.mark.parametrize("n", [1, 2, 7, 30, 31, 90, 120])
def test_tick_indices_space_labels_evenly_and_use_the_room(n):
    labels = day_labels(n)
    indices = charts.tick_indices(labels, PLOT_W)
    steps = {b - a for a, b in zip(indices, indices[1:], strict=False)}
    assert len(steps) <= 1, f"n={n}: uneven steps {steps}"
    slot = PLOT_W / n
    step = steps.pop() if steps else 1
    # The smallest step that fits: one fewer would make neighbours overlap (unless every day is labelled).
    assert step == 1 or (step - 1) * slot < charts.label_width(labels[0]) + charts.LABEL_GAP
    assert indices[0] < step  # no room left unlabelled at the start


def test_tick_indices_label_every_day_of_a_week_and_not_both_of_the_last_two_of_a_month():
    assert charts.tick_indices(day_labels(7), PLOT_W) == list(range(7))
    month = charts.tick_indices(day_labels(30), PLOT_W)
    assert 29 in month and 28 not in month  # the "12-02" over "12-03" of issue 17


def test_tick_indices_of_no_labels_are_empty():
    assert charts.tick_indices([], PLOT_W) == []


def test_label_width_grows_with_the_text_and_the_font():
    assert charts.label_width("12-03") > charts.label_width("3")
    assert charts.label_width("12-03", font_size=22) == 2 * charts.label_width("12-03")


@pytest.mark.parametrize("n", [1, 7, 30, 31, 90])
def test_column_and_line_charts_print_the_chosen_tick_labels(n):
    labels = day_labels(n)
    expected = [labels[i] for i in charts.tick_indices(labels, PLOT_W)]
    for svg in (charts.column_chart(key="c", title="t", x_label="day", y_label="v", labels=labels, values=[1] * n,
                                    line=[2] * n, line_label="l"),
                charts.line_chart(key="l", title="t", x_label="day", y_label="v", labels=labels, values=[1] * n)):
        assert re.findall(r'<text class="x-tick"[^>]*>([^<]*)</text>', svg) == expected
