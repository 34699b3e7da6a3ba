"""Every SQL query of the operations guide (§4, RB-03, RB-04, §8, §9) runs unchanged and answers right.

The query texts below are copied verbatim from ../shared/seeds/000_cee0a23284844980.txt.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from django.db import connection

from chain.models import EventSyncCursor, OrderStatus, UserProfile
from disputes.models import Blacklist
from tests import factories as f

pytestmark = pytest.mark.django_db

NOW = datetime.now(timezone.utc)

# ---- §4 Daily Operations Checklist
DAILY_ORDER_STATS = """SELECT
  COUNT(*) AS total,
  COUNT(*) FILTER (WHERE status = 'completed') AS completed,
  COUNT(*) FILTER (WHERE status = 'disputed') AS disputed,
  COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled,
  COUNT(*) FILTER (WHERE status = 'expired') AS expired,
  COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume
FROM orders
WHERE created_at > NOW() - INTERVAL '24 hours';"""
PENDING_DISPUTES = """SELECT COUNT(*) AS pending_disputes
FROM orders WHERE status = 'disputed';"""
SYNC_STATUS = """SELECT chain, last_block, updated_at,
  EXTRACT(EPOCH FROM (NOW() - updated_at))::int AS seconds_since_update
FROM event_sync_cursor;"""
DATABASE_SIZE = "SELECT pg_size_pretty(pg_database_size('p2p_escrow'));"

# ---- RB-03
RB03_CURSOR = "SELECT chain, last_block, updated_at FROM event_sync_cursor;"

# ---- RB-04
RB04_DISPUTE_STATS = """SELECT
  COUNT(*) AS total_orders,
  COUNT(*) FILTER (WHERE status = 'disputed') AS disputes,
  ROUND(100.0 * COUNT(*) FILTER (WHERE status = 'disputed') / NULLIF(COUNT(*), 0), 1) AS dispute_pct
FROM orders
WHERE created_at > NOW() - INTERVAL '24 hours';"""
RB04_REPEAT_OFFENDERS = """SELECT seller_wallet, COUNT(*) AS disputes
FROM orders
WHERE status = 'disputed' AND created_at > NOW() - INTERVAL '7 days'
GROUP BY seller_wallet
ORDER BY disputes DESC LIMIT 10;"""
RB04_BLACKLIST = "INSERT INTO blacklist (wallet, reason, source) VALUES ('{wallet}', 'High dispute rate', 'manual');"
RB04_PROFILE = "UPDATE user_profiles SET is_blacklisted = true WHERE wallet = '{wallet}';"

# ---- §8 Arbitrator Pool Monitoring
ARB_ACTIVE = """SELECT wallet, stake_amount, reputation, total_resolved, total_earned, is_active
FROM arbitrators
WHERE is_active = true
ORDER BY reputation DESC;"""
ARB_AT_RISK = """SELECT wallet, reputation, total_resolved
FROM arbitrators
WHERE reputation < 20 AND is_active = true;"""
ARB_STATS_30D = """SELECT
  o.arbitrator_wallet,
  COUNT(*) AS cases,
  COUNT(*) FILTER (WHERE o.status = 'resolved_buyer') AS favor_buyer,
  COUNT(*) FILTER (WHERE o.status = 'resolved_seller') AS favor_seller
FROM orders o
WHERE o.status IN ('resolved_buyer', 'resolved_seller')
  AND o.updated_at > NOW() - INTERVAL '30 days'
GROUP BY o.arbitrator_wallet;"""

# ---- §9 Business Metrics Dashboard
DAILY_VOLUME = """SELECT
  DATE(created_at) AS day,
  COUNT(*) AS orders,
  COUNT(*) FILTER (WHERE status = 'completed') AS completed,
  COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume_usdt,
  COALESCE(SUM(platform_fee) FILTER (WHERE status = 'completed'), 0) AS fees_usdt
FROM orders
WHERE created_at > NOW() - INTERVAL '30 days'
GROUP BY DATE(created_at)
ORDER BY day DESC;"""
USER_GROWTH = """SELECT
  DATE(created_at) AS day,
  COUNT(*) AS new_users,
  SUM(COUNT(*)) OVER (ORDER BY DATE(created_at)) AS cumulative_users
FROM user_profiles
WHERE created_at > NOW() - INTERVAL '30 days'
GROUP BY DATE(created_at);"""
DISPUTE_TREND = """SELECT
  DATE(created_at) AS day,
  COUNT(*) AS total_orders,
  COUNT(*) FILTER (WHERE status IN ('disputed','resolved_buyer','resolved_seller')) AS disputes,
  ROUND(100.0 * COUNT(*) FILTER (WHERE status IN ('disputed','resolved_buyer','resolved_seller'))
    / NULLIF(COUNT(*), 0), 1) AS dispute_rate_pct
FROM orders
WHERE created_at > NOW() - INTERVAL '30 days'
GROUP BY DATE(created_at)
ORDER BY day DESC;"""
TOP_SELLERS = """SELECT
  seller_wallet,
  u.display_name,
  COUNT(*) AS orders,
  SUM(amount) AS total_volume,
  u.rating
FROM orders o
JOIN user_profiles u ON u.wallet = o.seller_wallet
WHERE o.status = 'completed' AND o.created_at > NOW() - INTERVAL '30 days'
GROUP BY seller_wallet, u.display_name, u.rating
ORDER BY total_volume DESC
LIMIT 10;"""
CHAIN_DISTRIBUTION = """SELECT
  chain,
  COUNT(*) AS orders,
  SUM(amount) AS volume
FROM orders
WHERE created_at > NOW() - INTERVAL '30 days'
GROUP BY chain;"""


def run(sql: str) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def market():
    """A small market whose answers are known: two days of orders, disputes, arbitrators, cursors."""
    seller_a = f.profile(display_name="alpha", rating=Decimal("4.50"), created_at=NOW - timedelta(days=100))
    seller_b = f.profile(display_name="beta", rating=Decimal("3.90"), created_at=NOW - timedelta(days=3))
    buyer = f.profile(display_name="buyer", created_at=NOW - timedelta(days=3))
    recent = NOW - timedelta(hours=2)
    # Last 24 h: 2 completed (100 + 50), 2 disputed (seller_a), 1 cancelled, 1 expired, 1 funded.
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.COMPLETED, amount="100", created_at=recent)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.COMPLETED, amount="50", created_at=recent,
            chain="ethereum")
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.DISPUTED, amount="70", created_at=recent)
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.DISPUTED, amount="30", created_at=recent)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.CANCELLED, amount="10", created_at=recent)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.EXPIRED, amount="10", created_at=recent)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.FUNDED, amount="10", created_at=recent)
    # Three days ago: seller_b disputed once, a completed 400, resolutions by arbitrator arb1.
    old = NOW - timedelta(days=3)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.DISPUTED, amount="20", created_at=old)
    f.order(buyer=buyer, seller=seller_b, status=OrderStatus.COMPLETED, amount="400", created_at=old)
    arb1, arb2 = f.wallet(0xA1), f.wallet(0xA2)
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.RESOLVED_BUYER, amount="5", created_at=old,
            updated_at=NOW - timedelta(days=1), arbitrator_wallet=arb1)
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.RESOLVED_SELLER, amount="5", created_at=old,
            updated_at=NOW - timedelta(days=1), arbitrator_wallet=arb1)
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.RESOLVED_SELLER, amount="5", created_at=old,
            updated_at=NOW - timedelta(days=40), arbitrator_wallet=arb2)  # outside the 30-day window
    # 40 days ago: outside every window.
    f.order(buyer=buyer, seller=seller_a, status=OrderStatus.COMPLETED, amount="999",
            created_at=NOW - timedelta(days=40))
    f.arbitrator(address=arb1, reputation=80, stake_amount=Decimal("2"), total_resolved=12)
    f.arbitrator(address=arb2, reputation=15, total_resolved=3)
    f.arbitrator(reputation=5, is_active=False)
    EventSyncCursor.objects.create(chain="bsc", last_block=40_000_123)
    EventSyncCursor.objects.create(chain="ethereum", last_block=19_000_456)
    return {"seller_a": seller_a, "seller_b": seller_b, "buyer": buyer, "arb1": arb1, "arb2": arb2}


def test_daily_check_order_stats_counts_last_24_hours(market):
    assert run(DAILY_ORDER_STATS) == [(7, 2, 2, 1, 1, Decimal("150"))]


def test_daily_check_pending_disputes_counts_all_open_disputes(market):
    assert run(PENDING_DISPUTES) == [(3,)]


def test_daily_check_sync_status_lists_each_chain(market):
    rows = {r[0]: r for r in run(SYNC_STATUS)}
    assert rows["bsc"][1] == 40_000_123 and rows["ethereum"][1] == 19_000_456
    assert all(0 <= r[3] < 60 for r in rows.values())


def test_daily_check_database_size_names_the_runbook_database():
    (size,) = run(DATABASE_SIZE)[0]
    assert size.endswith(("bytes", "kB", "MB", "GB"))


def test_rb03_cursor_query_reads_event_sync_cursor(market):
    assert sorted((r[0], r[1]) for r in run(RB03_CURSOR)) == [("bsc", 40_000_123), ("ethereum", 19_000_456)]


def test_rb04_dispute_stats_compute_the_24h_rate(market):
    assert run(RB04_DISPUTE_STATS) == [(7, 2, Decimal("28.6"))]


def test_rb04_repeat_offenders_rank_sellers_by_disputes(market):
    assert run(RB04_REPEAT_OFFENDERS) == [(market["seller_a"].wallet, 2), (market["seller_b"].wallet, 1)]


def test_rb04_blacklist_insert_as_written_uses_database_defaults(market):
    checksummed = "0x" + market["seller_a"].wallet[2:].upper()  # any case is canonicalised
    run(RB04_BLACKLIST.format(wallet=checksummed))
    run(RB04_PROFILE.format(wallet=market["seller_a"].wallet))
    entry = Blacklist.objects.get()
    assert entry.wallet == market["seller_a"].wallet
    assert (entry.reason, entry.source, entry.lifted_at) == ("High dispute rate", "manual", None)
    assert entry.created_at is not None
    assert UserProfile.objects.get(pk=market["seller_a"].pk).is_blacklisted is True


def test_rb04_profile_flag_follows_blacklist_even_without_the_update(market):
    run(RB04_BLACKLIST.format(wallet=market["seller_b"].wallet))
    assert UserProfile.objects.get(pk=market["seller_b"].pk).is_blacklisted is True


def test_arbitrators_active_are_ordered_by_reputation(market):
    rows = run(ARB_ACTIVE)
    assert [r[0] for r in rows] == [market["arb1"], market["arb2"]]
    assert rows[0][1:] == (Decimal("2"), 80, 12, Decimal("0"), True)


def test_arbitrators_at_risk_are_active_below_20(market):
    assert run(ARB_AT_RISK) == [(market["arb2"], 15, 3)]


def test_arbitrator_stats_cover_30_days_of_resolutions(market):
    assert run(ARB_STATS_30D) == [(market["arb1"], 2, 1, 1)]


def test_business_daily_volume_sums_completed_orders_per_day(market):
    rows = run(DAILY_VOLUME)
    by_day = {r[0]: r for r in rows}
    today = by_day[(NOW - timedelta(hours=2)).date()]
    assert today[1:] == (7, 2, Decimal("150"), Decimal("1.5"))
    assert sum(r[1] for r in rows) == 12  # the 40-day-old order is outside the window
    assert [r[0] for r in rows] == sorted(by_day, reverse=True)


def test_business_user_growth_accumulates_new_users(market):
    rows = run(USER_GROWTH)
    assert [r[1] for r in rows] == [2]  # seller_b and buyer, three days ago; seller_a is older
    assert rows[-1][2] == 2


def test_business_dispute_trend_counts_open_and_resolved_disputes(market):
    rows = {r[0]: r for r in run(DISPUTE_TREND)}
    today = rows[(NOW - timedelta(hours=2)).date()]
    assert today[1:] == (7, 2, Decimal("28.6"))
    three_days = rows[(NOW - timedelta(days=3)).date()]
    assert three_days[1:] == (5, 4, Decimal("80.0"))


def test_business_top_sellers_rank_completed_volume(market):
    rows = run(TOP_SELLERS)
    assert rows == [
        (market["seller_b"].wallet, "beta", 2, Decimal("450"), Decimal("3.90")),
        (market["seller_a"].wallet, "alpha", 1, Decimal("100"), Decimal("4.50")),
    ]


def test_business_chain_distribution_splits_orders_by_chain(market):
    assert sorted(run(CHAIN_DISTRIBUTION)) == [("bsc", 11, Decimal("665")), ("ethereum", 1, Decimal("50"))]
