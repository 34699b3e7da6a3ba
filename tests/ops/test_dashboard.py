"""The operations dashboard: tiles with the right numbers, SVG charts and their CSVs, a bounded, orders-free cost."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from backoffice.alerts.services import acknowledge_alert, raise_alert
from chain import rollup
from chain.models import ChainState, EventSyncCursor, OrderStatus, TopSeller
from ops.console import services as console
from ops.models import SecretSchedule
from tests import factories as f

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_chain")]

NOW = datetime.now(timezone.utc)
TODAY = NOW.date()
WALLET_S1, WALLET_S2, WALLET_S3 = f.wallet(0x51), f.wallet(0x52), f.wallet(0x53)


def _noon(days_ago: int) -> datetime:
    return datetime.combine(TODAY - timedelta(days=days_ago), time(12), tzinfo=timezone.utc)


@pytest.fixture
def market(staff_user):
    """Seven orders in the window and one older, two open disputes, a cursor, a paused chain and open problems."""
    buyer = f.profile()  # first seen today
    s1 = f.profile(WALLET_S1, display_name="Seller One", created_at=_noon(5))
    s2 = f.profile(WALLET_S2, display_name="Seller Two", created_at=_noon(1))
    s3 = f.profile(WALLET_S3, display_name="Old Seller", created_at=_noon(40))
    today_start = datetime.combine(TODAY, time(0, 0, 1), tzinfo=timezone.utc)
    orders = [
        f.order(buyer=buyer, seller=s1, amount="100", created_at=_noon(1)),
        f.order(buyer=buyer, seller=s2, amount="300", created_at=_noon(1)),
        f.order(buyer=buyer, seller=s1, amount="50", created_at=_noon(2), chain="ethereum"),
        f.order(buyer=buyer, seller=s2, amount="200", created_at=_noon(1), status=OrderStatus.DISPUTED,
                disputed_at=NOW - timedelta(hours=50)),
        f.order(buyer=buyer, seller=s1, amount="70", created_at=_noon(3), chain="ethereum",
                status=OrderStatus.DISPUTED, disputed_at=NOW - timedelta(hours=2)),
        f.order(buyer=buyer, seller=s1, amount="40", created_at=_noon(2), status=OrderStatus.RESOLVED_BUYER),
        f.order(buyer=buyer, seller=s2, amount="10", created_at=today_start, status=OrderStatus.FUNDED),
        f.order(buyer=buyer, seller=s3, amount="1000", created_at=_noon(40)),  # outside the 30-day window
    ]
    rollup.rebuild_all()
    rollup.refresh_top_sellers()
    EventSyncCursor.objects.create(chain="bsc", last_block=1000, head_block=1004, updated_at=NOW)
    EventSyncCursor.objects.create(chain="ethereum", last_block=500, head_block=750, updated_at=NOW)
    ChainState.objects.create(chain="bsc", paused=True, solvency_ok=True)
    ChainState.objects.create(chain="ethereum", paused=False, solvency_ok=True)
    SecretSchedule.objects.all().delete()  # the runbook's schedules (a data migration) are not this test's
    SecretSchedule.objects.create(name="db-password", interval_days=90, last_rotated_at=NOW - timedelta(days=100))
    SecretSchedule.objects.create(name="api-key", interval_days=90, last_rotated_at=NOW - timedelta(days=85))
    SecretSchedule.objects.create(name="fresh", interval_days=90, last_rotated_at=NOW)
    console.open_incident(actor=staff_user, title="RPC flapping", severity="P2")
    raise_alert(key="t1", severity="P1", title="Sync stalled", source="test")
    raise_alert(key="t2", severity="P3", title="Large order", source="test")
    acked = raise_alert(key="t3", severity="P0", title="Old", source="test")
    acknowledge_alert(actor=staff_user, alert=acked)
    return orders


def test_dashboard_sync_tile_uses_the_alerts_lag_threshold(staff_client, market):
    from ops.models import PlatformFlag

    PlatformFlag.objects.update_or_create(key="SYNC_LAG_ALERT_BLOCKS", defaults={"value": 3})
    tiles = _tiles(staff_client.get(reverse("admin:index")))
    assert tiles["sync-bsc"].value == "4 blocks" and tiles["sync-bsc"].status == "warning"  # as check_sync sees it
    PlatformFlag.objects.filter(key="SYNC_LAG_ALERT_BLOCKS").update(value=300)
    tiles = _tiles(staff_client.get(reverse("admin:index")))
    assert tiles["sync-ethereum"].value == "250 blocks" and tiles["sync-ethereum"].status == "ok"


def _tiles(response) -> dict:
    return {t.key: t for t in response.context["dashboard"]["tiles"]}


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_dashboard_tiles_show_the_fixture_numbers_and_link_to_their_pages(staff_client, market):
    response = staff_client.get(reverse("admin:index"))
    assert response.status_code == 200
    tiles = _tiles(response)
    assert {"health-database", "health-redis", "health-celery", "health-rpc_bsc", "health-rpc_eth"} <= set(tiles)
    assert tiles["health-database"].value == "ok"
    assert tiles["sync-bsc"].value == "4 blocks" and tiles["sync-bsc"].status == "ok"
    assert tiles["sync-ethereum"].value == "250 blocks" and tiles["sync-ethereum"].status == "warning"
    assert tiles["contract-bsc"].value == "PAUSED" and tiles["contract-bsc"].status == "error"
    assert tiles["contract-ethereum"].value == "running" and tiles["contract-ethereum"].status == "ok"
    assert tiles["disputes"].value == 2
    assert tiles["disputes"].detail.startswith("oldest 2 d 2 h") and tiles["disputes"].status == "warning"
    assert tiles["secrets"].value == 2 and tiles["secrets"].detail == "1 overdue, 1 due soon"
    assert tiles["incidents"].value == 1 and tiles["incidents"].detail == "worst P2"
    assert tiles["alerts"].value == 2 and tiles["alerts"].detail == "worst P1"

    html = response.content.decode()
    for url in ("/admin/disputes/disputedorder/", "/admin/chain/eventsynccursor/", "/admin/ops/secretschedule/",
                "/admin/ops/incident/", "/admin/alerts/alert/?acknowledged_at__isempty=1",
                reverse("admin:ops_contractaction_status", args=["bsc"])):
        assert f'href="{url}"' in html.replace("&amp;", "&"), url
    assert 'id="tile-disputes"' in html and ">2<" in html.split('id="tile-disputes"')[1][:400]
    # Staff still navigate from the app list below the dashboard.
    assert 'class="app-chain module' in html and 'href="/admin/chain/order/"' in html


def test_dashboard_charts_render_as_inline_svg_with_the_fixture_numbers(staff_client, market):
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "<script" not in html.split('id="ops-dashboard"')[1].split('id="content-related"')[0]
    assert "http://" not in re.sub(r'xmlns="http://www.w3.org/2000/svg"', "", html.split('id="ops-dashboard"')[1])
    for key in ("volume", "disputes", "users", "chains", "sellers"):
        svg = re.search(rf'<svg class="dashboard-chart" id="chart-{key}".*?</svg>', html, re.S)
        assert svg, key
        assert "<title" in svg.group(0) and 'class="axis-label"' in svg.group(0)
        assert f'href="/admin/dashboard/{key}.csv"' in html
    day1 = (TODAY - timedelta(days=1)).strftime("%m-%d")
    volume = re.search(r'id="chart-volume".*?</svg>', html, re.S).group(0)
    assert f"<title>{day1}: 400</title>" in volume  # 100 + 300 completed
    disputes = re.search(r'id="chart-disputes".*?</svg>', html, re.S).group(0)
    assert f"<title>{day1}: 33.3</title>" in disputes  # 1 of 3 orders that day
    chains = re.search(r'id="chart-chains".*?</svg>', html, re.S).group(0)
    assert "<title>bsc: 5</title>" in chains and "<title>ethereum: 2</title>" in chains
    sellers = re.search(r'id="chart-sellers".*?</svg>', html, re.S).group(0)
    assert "<title>Seller Two: 300</title>" in sellers and "<title>Seller One: 150</title>" in sellers
    assert "Old Seller" not in sellers
    assert "day (UTC)" in volume


def test_dashboard_chart_csvs_hold_the_fixture_rows(staff_client, market):
    def day(n: int) -> str:
        return (TODAY - timedelta(days=n)).isoformat()

    volume = _csv(staff_client.get("/admin/dashboard/volume.csv"))
    assert volume[0] == ["day", "orders", "completed", "volume_usdt", "fees_usdt"]
    assert len(volume) == 31 and volume[1][0] == day(29) and volume[-1][0] == day(0)
    by_day = {r[0]: r[1:] for r in volume[1:]}
    assert [by_day[day(1)][0], by_day[day(1)][1], Decimal(by_day[day(1)][2]), Decimal(by_day[day(1)][3])] == \
        ["3", "2", Decimal(400), Decimal(4)]
    assert [by_day[day(2)][0], by_day[day(2)][1], Decimal(by_day[day(2)][2])] == ["2", "1", Decimal(50)]
    assert by_day[day(0)][:2] == ["1", "0"] and by_day[day(10)][:2] == ["0", "0"]

    disputes = {r[0]: r[1:] for r in _csv(staff_client.get("/admin/dashboard/disputes.csv"))[1:]}
    assert disputes[day(1)] == ["3", "1", "33.3"]
    assert disputes[day(2)] == ["2", "1", "50.0"]
    assert disputes[day(3)] == ["1", "1", "100.0"]
    assert disputes[day(10)] == ["0", "0", ""]

    users = {r[0]: r[1:] for r in _csv(staff_client.get("/admin/dashboard/users.csv"))[1:]}
    assert users[day(5)] == ["1", "1"] and users[day(1)] == ["1", "2"] and users[day(0)] == ["1", "3"]

    chains = _csv(staff_client.get("/admin/dashboard/chains.csv"))
    assert [(r[0], r[1], Decimal(r[2])) for r in chains[1:]] == [("bsc", "5", Decimal(650)),
                                                                  ("ethereum", "2", Decimal(120))]

    sellers = _csv(staff_client.get("/admin/dashboard/sellers.csv"))
    assert sellers[0] == ["rank", "seller_wallet", "display_name", "orders", "total_volume", "rating"]
    assert [(r[0], r[1], r[2], r[3], Decimal(r[4])) for r in sellers[1:]] == [
        ("1", WALLET_S2, "Seller Two", "1", Decimal(300)), ("2", WALLET_S1, "Seller One", "2", Decimal(150))]


def test_dashboard_costs_a_bounded_number_of_queries_and_never_aggregates_all_orders(staff_client, market):
    staff_client.get(reverse("admin:index"))  # warm the health cache's first run
    with CaptureQueriesContext(connection) as ctx:
        assert staff_client.get(reverse("admin:index")).status_code == 200
    assert len(ctx.captured_queries) <= 25, [q["sql"] for q in ctx.captured_queries]
    on_orders = [q["sql"] for q in ctx.captured_queries if re.search(r'\b(FROM|JOIN) "?orders"?(\s|$)', q["sql"])]
    # The only read of the orders table: the oldest open dispute, one probe of the partial index.
    assert len(on_orders) == 1, on_orders
    assert 'MIN("orders"."disputed_at")' in on_orders[0] and "WHERE" in on_orders[0], on_orders
    assert "'disputed'" in on_orders[0] or "disputed" in str(ctx.captured_queries[0]), on_orders


def test_top_sellers_snapshot_counts_completed_orders_of_the_last_30_days(market):
    assert [(s.rank, s.seller_wallet, s.orders, s.total_volume) for s in TopSeller.objects.all()] == [
        (1, WALLET_S2, 1, Decimal(300)), (2, WALLET_S1, 2, Decimal(150))]
    assert rollup.refresh_top_sellers() == 2  # replaces, never appends
    assert TopSeller.objects.count() == 2


def test_dashboard_says_when_top_sellers_were_never_computed(staff_client, market):
    TopSeller.objects.all().delete()
    html = staff_client.get(reverse("admin:index")).content.decode()
    assert "Not computed yet" in html and "No data yet." in html


def test_dashboard_chart_csv_refuses_unknown_charts_and_staff_without_order_access(client, staff_client,
                                                                                     django_user_model, market):
    assert staff_client.get("/admin/dashboard/nope.csv").status_code == 404
    clerk = django_user_model.objects.create_user("clerk", password="pw-clerk-123456", is_staff=True)
    client.force_login(clerk)
    assert client.get("/admin/dashboard/volume.csv").status_code == 403
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200 and response.context["dashboard"]["charts"] == []
    assert "pending disputes" in response.content.decode()
