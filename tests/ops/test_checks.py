"""Scheduled checks: the daily operations report, sync stuck / lag, large orders, secret rotations, user tiers."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from backoffice.alerts.models import Alert
from chain import rpc
from chain.models import EventSyncCursor, UserProfile
from ops.models import OpsReport, SecretSchedule
from ops.monitoring import health
from ops.monitoring.checks import business as business_checks
from ops.monitoring.checks import daily as daily_checks
from ops.monitoring.checks import sync as sync_checks
from tests import factories
from tests.ops.test_health import close_health_pool_connections

ESCROW = "0x" + "e5" * 20
POOL = "0x" + "a1" * 20


@pytest.fixture(autouse=True)
def bsc_configured(settings, tmp_path):
    """bsc configured (a deployment file; no RPC is called by these checks), ethereum not."""
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps({"bsc": {"rpc_url": "http://127.0.0.1:9", "escrow": ESCROW, "arbitrator_pool": POOL}}))
    settings.CHAIN_DEPLOYMENT_FILE = path
    rpc.reset_clients()
    health._redis_client = None
    health.reset_cache()
    yield
    rpc.reset_clients()
    close_health_pool_connections()


def alerts(prefix: str = "") -> dict[str, Alert]:
    return {a.key: a for a in Alert.objects.filter(key__startswith=prefix)}


def cursor(chain: str, *, last: int, head: int, minutes_ago: float = 0) -> EventSyncCursor:
    EventSyncCursor.objects.update_or_create(chain=chain, defaults={"last_block": last, "head_block": head})
    EventSyncCursor.objects.filter(chain=chain).update(updated_at=timezone.now() - timedelta(minutes=minutes_ago))
    return EventSyncCursor.objects.get(chain=chain)


# ------------------------------------------------------------------------------------------ daily check


def test_checks_daily_operations_check_stores_the_report_and_raises_a_p3(db, django_capture_on_commit_callbacks):
    o = factories.order
    o(status="completed", amount="100")
    o(status="completed", amount="250.5")
    o(status="disputed", amount="80")
    o(status="cancelled", amount="10")
    o(status="expired", amount="10")
    o(status="disputed", amount="70", created_at=timezone.now() - timedelta(days=3))  # pending, not in 24 h
    o(status="completed", amount="999", created_at=timezone.now() - timedelta(days=2))
    cursor("bsc", last=900, head=912)
    from backoffice.alerts.services import raise_alert

    raise_alert(key="sync-lag:bsc", severity="P2", title="bsc lag", source="check_sync")
    old = raise_alert(key="gas-low:bsc:relayer", severity="P2", title="relayer gas", source="check_custody")
    Alert.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))

    report = daily_checks.daily_operations_check()

    stored = OpsReport.objects.get(pk=report.pk)
    assert stored.kind == "daily_check"
    assert stored.status in ("ok", "degraded")
    data = stored.data
    assert data["health"] == stored.status
    assert set(data["checks"]) == {"database", "redis", "celery", "beat", "rpc_bsc", "rpc_eth"}
    day = data["orders_24h"]
    assert {k: int(v) for k, v in day.items() if k != "volume"} == {"total": 5, "completed": 2, "disputed": 1,
                                                                   "cancelled": 1, "expired": 1}
    assert float(day["volume"]) == 350.5
    assert data["pending_disputes"] == 2
    assert data["sync"] == [{"chain": "bsc", "last_block": 900, "lag": 12, "seconds_since_update": 0}]
    assert data["database_size"].endswith(("kB", "MB", "GB"))
    assert data["redis_memory_mb"] is not None and data["celery_workers"] is not None
    lines = stored.text.splitlines()
    assert lines[0].startswith("P2P Escrow daily check")
    for n, section in enumerate(("Health", "Orders 24 h", "Pending disputes", "Sync", "Database size",
                                 "Redis memory", "Celery workers", "Backups", "Alerts 24 h"), start=1):
        assert lines[n].startswith(f"{n}. {section}:"), lines[n]
    assert lines[9] == "9. Alerts 24 h: 1 raised (P2 1); 2 firing, 2 not acknowledged"
    assert lines[10].startswith("10. Precision 30 days") and "sync-lag 1/0/0/0/—/—" in lines[10]
    assert data["precision_30d"]["sync-lag"] == {"fired": 1, "resolved_by_itself": 0, "true": 0, "false": 0,
                                                 "test": 0, "precision": None, "median_ack_s": None}
    assert "5 total, 2 completed, 1 disputed, 1 cancelled, 1 expired" in stored.text
    assert "bsc block 900 lag 12" in stored.text

    [alert] = Alert.objects.filter(source="daily_check")
    assert alert.severity == "P3"
    assert alert.key == f"daily-check:{timezone.now():%Y-%m-%d}"
    assert alert.title == f"Daily operations check: {stored.status}"
    assert alert.message == stored.text


# ------------------------------------------------------------------------------------------ sync


def test_checks_sync_raises_sync_stuck_when_the_cursor_has_not_moved_for_ten_minutes(db):
    cursor("bsc", last=1000, head=1003, minutes_ago=11)
    assert sync_checks.check_sync() == ["sync-stuck:bsc"]
    alert = alerts()["sync-stuck:bsc"]
    assert alert.severity == "P1" and "RB-03" in alert.message


def test_checks_sync_raises_sync_lag_over_100_blocks(db):
    cursor("bsc", last=1000, head=1101)
    assert sync_checks.check_sync() == ["sync-lag:bsc"]
    alert = alerts()["sync-lag:bsc"]
    assert alert.severity == "P2" and "101 blocks" in alert.title


def test_checks_sync_raises_nothing_when_healthy(db):
    cursor("bsc", last=1000, head=1100, minutes_ago=9)  # 100 blocks is the threshold, not over it
    cursor("ethereum", last=5, head=900, minutes_ago=60)  # not configured here: not watched
    assert sync_checks.check_sync() == []
    assert not alerts("sync-")


def test_checks_sync_stuck_and_lagging_raises_both(db):
    cursor("bsc", last=1000, head=1500, minutes_ago=30)
    assert sync_checks.check_sync() == ["sync-stuck:bsc", "sync-lag:bsc"]


# ------------------------------------------------------------------------------------------ large orders


def test_checks_large_orders_alert_once_per_order_over_5000(db):
    big = factories.order(status="funded", amount="6000", created_at=timezone.now() - timedelta(minutes=5))
    just = factories.order(status="funded", amount="5000.01", created_at=timezone.now() - timedelta(minutes=5))
    factories.order(status="funded", amount="5000", created_at=timezone.now() - timedelta(minutes=5))
    factories.order(status="funded", amount="100", created_at=timezone.now() - timedelta(minutes=5))
    factories.order(status="funded", amount="9000", created_at=timezone.now() - timedelta(hours=2))  # outside window

    assert business_checks.check_large_orders() == 2
    assert business_checks.check_large_orders() == 2  # the next run sees them again …
    found = alerts("large-order:")
    assert set(found) == {f"large-order:bsc:{big.onchain_id}", f"large-order:bsc:{just.onchain_id}"}  # … one each
    assert found[f"large-order:bsc:{big.onchain_id}"].severity == "P3"
    assert found[f"large-order:bsc:{big.onchain_id}"].title == f"Large order bsc #{big.onchain_id}: 6000 USDT"
    assert Alert.objects.filter(key__startswith="large-order:").count() == 2


def test_checks_large_orders_compare_only_dollar_tokens_with_the_dollar_threshold(db, settings):
    """3 WBTC is not 3 dollars, nor 6,000 of a cheap token 6,000 dollars: only USD stablecoins are compared."""
    settings.USD_STABLECOINS = ["USDT", "USDC"]
    recent = timezone.now() - timedelta(minutes=5)
    usdc = factories.order(status="funded", amount="7000", token_symbol="usdc", created_at=recent)
    factories.order(status="funded", amount="6000", token_symbol="SHIB", created_at=recent)
    factories.order(status="funded", amount="3", token_symbol="WBTC", created_at=recent)
    assert business_checks.check_large_orders() == 1
    assert set(alerts("large-order:")) == {f"large-order:bsc:{usdc.onchain_id}"}


# ------------------------------------------------------------------------------------------ secrets


def test_checks_secret_rotations_alert_overdue_p2_and_due_p3(db):
    SecretSchedule.objects.all().delete()
    now = timezone.now()
    SecretSchedule.objects.create(name="JWT_SECRET", interval_days=30, last_rotated_at=now - timedelta(days=31))
    SecretSchedule.objects.create(name="DB_PASSWORD", interval_days=90, last_rotated_at=now - timedelta(days=85))
    SecretSchedule.objects.create(name="PINATA_API_KEY", interval_days=365, last_rotated_at=now - timedelta(days=10))
    SecretSchedule.objects.create(name="Contract owner key", interval_days=None)

    assert sorted(business_checks.check_secret_rotations()) == ["DB_PASSWORD", "JWT_SECRET"]
    found = alerts("secret-")
    assert set(found) == {"secret-overdue:JWT_SECRET", "secret-due:DB_PASSWORD"}
    assert found["secret-overdue:JWT_SECRET"].severity == "P2"
    assert found["secret-due:DB_PASSWORD"].severity == "P3"


# ------------------------------------------------------------------------------------------ user tiers


def test_checks_recalculate_user_tiers_follows_the_rules(db):
    p = factories.profile
    desk = p()  # the counterparty of every order
    gold, lost, silver, bronze, old, idle = p(), p(tier="gold"), p(), p(), p(tier="gold"), p(tier="bronze")
    for _ in range(50):
        factories.order(seller=gold, buyer=desk, amount="200")  # 50 completed, exactly 10,000
        factories.order(seller=lost, buyer=desk, amount="300")
    factories.order(seller=lost, buyer=desk, status="resolved_buyer", amount="10")  # lost one dispute
    for _ in range(10):
        factories.order(buyer=silver, seller=desk, amount="5000")  # volume is not enough without 50 trades
    factories.order(buyer=bronze, seller=desk, amount="1")
    factories.order(buyer=bronze, seller=desk, status="cancelled", amount="1")
    for _ in range(60):
        factories.order(seller=old, buyer=desk, amount="500", created_at=timezone.now() - timedelta(days=100))

    changed = business_checks.recalculate_user_tiers()

    tiers = dict(UserProfile.objects.values_list("wallet", "tier"))
    assert tiers[gold.wallet] == "gold"
    assert tiers[lost.wallet] == "silver"  # a lost dispute keeps a trader out of gold
    assert tiers[silver.wallet] == "silver"
    assert tiers[bronze.wallet] == "bronze"
    assert tiers[old.wallet] == "new"  # older than 90 days does not count
    assert tiers[idle.wallet] == "new"
    assert tiers[desk.wallet] == "gold"
    assert changed == 7  # every profile above changed (lost and old were gold, idle bronze)
    assert business_checks.recalculate_user_tiers() == 0  # only changed rows are written


# ------------------------------------------------------------------------------------------ maintenance


@pytest.mark.django_db(transaction=True)
def test_vacuum_database_runs_vacuum_analyze_and_stores_a_report():
    factories.order(status="funded", amount="10")
    report = daily_checks.vacuum_database()
    assert report.kind == "vacuum" and report.status == "ok" and "VACUUM (ANALYZE)" in report.text
    with connection.cursor() as cur:  # what it did, read back from PostgreSQL's own statistics
        cur.execute("SELECT last_vacuum IS NOT NULL AND last_analyze IS NOT NULL FROM pg_stat_user_tables "
                    "WHERE relname = 'orders'")
        assert cur.fetchone()[0] is True


def test_daily_check_gives_the_database_growth_per_day_from_a_week_of_reports(db):
    first = daily_checks.daily_operations_check()
    assert first.data["database_growth_bytes_per_day"] is None, "no earlier report: no rate"
    OpsReport.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(days=4),
                                                 data={**first.data, "database_bytes": first.data["database_bytes"]
                                                       - 40_000_000})
    second = daily_checks.daily_operations_check()
    assert second.data["database_growth_bytes_per_day"] == pytest.approx(10_000_000, rel=0.05)
    assert "+10.0 MB/day over the last week" in second.text.splitlines()[5]
