"""The dashboard's daily charts in a real browser: the x-axis day labels, as Chromium lays them out, never overlap."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from chain import rollup
from ops.monitoring import charts
from tests import factories as f

from .conftest import device_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_chain")]

DAILY_CHARTS = ("chart-volume", "chart-disputes", "chart-users")
# Every printed label's box, in page pixels (getBoundingClientRect) and in the chart's own units (getBBox).
LABEL_BOXES = """
return Array.from(document.querySelectorAll('svg.dashboard-chart')).map(svg => ({
  id: svg.id,
  labels: Array.from(svg.querySelectorAll('text.x-tick')).map(t => {
    const r = t.getBoundingClientRect(), b = t.getBBox();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: b.width};
  }),
}));
"""


def trade_for_days(days: int) -> None:
    """An order (and a new user) on each of the last `days` UTC days, today included, then the daily rollup."""
    today = datetime.now(timezone.utc).date()
    for back in range(days):
        noon = datetime.combine(today - timedelta(days=back), time(12), tzinfo=timezone.utc)
        f.order(buyer=f.profile(created_at=noon), seller=f.profile(created_at=noon), amount=str(100 + 37 * back),
                created_at=min(noon, datetime.now(timezone.utc)))
    rollup.rebuild_all()


@pytest.mark.parametrize("days", [1, 7, 30])
def test_dashboard_chart_day_labels_never_overlap_in_the_browser(open_browser, make_staff, days):
    vera = make_staff("vera", "viewer")
    trade_for_days(days)
    browser = open_browser("vera")
    browser.login("vera", code=lambda: device_code(TOTPDevice.objects.get(user=vera)))
    assert browser.path == "/admin/"

    browser.wait_for("svg.dashboard-chart text.x-tick")
    browser.driver.execute_script("document.getElementById('chart-volume').scrollIntoView({block: 'center'})")
    browser.shot(f"charts-{days}-days")
    charted = {chart["id"]: chart["labels"] for chart in browser.driver.execute_script(LABEL_BOXES)}

    today = datetime.now(timezone.utc).date().strftime("%m-%d")
    for chart_id in DAILY_CHARTS:
        labels = charted[chart_id]
        assert len(labels) >= 5, f"{chart_id}: only {[label['text'] for label in labels]}"
        assert labels[-1]["text"] == today, f"{chart_id}: the most recent day is labelled"
        for label in labels:
            assert label["right"] > label["left"], f"{chart_id}: {label['text']} is not drawn"
            # What the server spaced the labels by is at least what the browser draws.
            assert label["width"] <= charts.label_width(label["text"]), label
        for before, after in zip(labels, labels[1:], strict=False):
            assert before["right"] <= after["left"], f"{chart_id}: {before['text']} overlaps {after['text']}"
