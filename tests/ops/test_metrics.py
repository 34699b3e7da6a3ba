"""/metrics: not public, the runbook's metrics with the right values, no orders-table scan; the alert rules."""
from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from prometheus_client.parser import text_string_to_metric_families

from chain.models import ChainState, EventSyncCursor, RpcProvider
from chain.rollup import rebuild_all
from ops.models import SecretSchedule
from ops.monitoring import metrics
from ops.monitoring.health import WORKER_HEARTBEAT_KEY, redis_client
from tests import factories
from tests.ops.test_health import own_redis  # noqa: F401 - a fixture: a Redis of the test's own
from tests.staff_helpers import OTP, password_login, totp_code

TOKEN = "metrics-token-for-tests-0123456789"
RULES = django_settings.BASE_DIR / "ops" / "prometheus" / "alerts.yml"
ALERT_TESTS = django_settings.BASE_DIR / "ops" / "prometheus" / "alerts_test.yml"


@pytest.fixture(autouse=True)
def metrics_setup(settings):
    settings.METRICS_TOKEN = TOKEN
    metrics.reset_cache()
    yield
    metrics.reset_cache()


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    metrics.reset_cache()
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **headers)
    assert response.status_code == 200, response.content[:200]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.content.decode()) for s in family.samples}


@pytest.fixture
def market(db, own_redis):  # noqa: F811
    """A small market on both chains, its rollup, sync cursors, providers, chain state, secrets and a queue."""
    o = factories.order
    for _ in range(3):
        o(status="completed", amount="100", platform_fee=Decimal("1"), close_reason="confirmed")
    o(status="completed", amount="200", platform_fee=Decimal("2"), close_reason="auto_released")
    o(status="disputed", amount="100")
    o(status="disputed", amount="100")
    o(status="resolved_buyer", amount="100", close_reason="arbitrator")
    o(status="expired", amount="100", close_reason="seller_timeout")
    o(status="expired", amount="100", close_reason="seller_timeout")
    o(status="funded", amount="6000")  # a large order
    o(status="completed", amount="50", platform_fee=Decimal("0.5"), close_reason="confirmed", chain="ethereum",
      token_symbol="USDC", created_at=timezone.now() - timedelta(days=3))
    rebuild_all()

    EventSyncCursor.objects.update_or_create(chain="bsc", defaults={"last_block": 1000, "head_block": 1150})
    EventSyncCursor.objects.update_or_create(chain="ethereum", defaults={"last_block": 500, "head_block": 502})
    RpcProvider.objects.create(chain="bsc", role="primary", url="http://primary", state="open", latency_ms=None,
                               in_use=False)
    RpcProvider.objects.create(chain="bsc", role="fallback", url="http://fallback", state="closed",
                               latency_ms=120.0, in_use=True)
    # bsc read short once (an observation), ethereum short at two blocks (the confirmed insolvency that pages).
    ChainState.objects.update_or_create(chain="bsc", defaults={"paused": False, "solvency_ok": False,
                                                               "solvency_short_since": 1000, "solvency_block": 1000})
    ChainState.objects.update_or_create(chain="ethereum", defaults={"paused": True, "solvency_ok": False,
                                                                    "solvency_short_since": 480, "solvency_block": 500})

    SecretSchedule.objects.all().delete()
    now = timezone.now()
    SecretSchedule.objects.create(name="JWT_SECRET", interval_days=30, last_rotated_at=now - timedelta(days=40))
    SecretSchedule.objects.create(name="DB_PASSWORD", interval_days=90, last_rotated_at=now - timedelta(days=10))
    SecretSchedule.objects.create(name="PINATA_API_KEY", interval_days=365, last_rotated_at=None)
    SecretSchedule.objects.create(name="Contract owner key", interval_days=None)

    r = redis_client()
    r.rpush("celery", "t1", "t2", "t3", "t4")
    r.hset(WORKER_HEARTBEAT_KEY, "worker@host", timezone.now().timestamp())


def test_metrics_forbidden_without_the_token(client, db):
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong-token").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=TOKEN).status_code == 403  # no "Bearer"


def test_metrics_forbidden_for_a_non_staff_login(client, django_user_model):
    user = django_user_model.objects.create_user("customer", password="customer-password-1")
    client.force_login(user)
    assert client.get("/metrics").status_code == 403


def test_metrics_allowed_with_the_bearer_token(client, db):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert b"p2p_orders_created_total" in response.content


def test_metrics_allowed_for_a_staff_session(staff_client):
    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert b"p2p_orders_created_total" in response.content


def test_metrics_forbidden_in_production_to_a_session_that_passed_only_the_password(client, settings,
                                                                                    django_user_model):
    """Issue 22, finding 1: the password step alone is not a staff login; the one-time code is."""
    settings.PRODUCTION = True
    user = django_user_model.objects.create_user("pat", password="pat-password-for-tests", is_staff=True)
    user.groups.set([Group.objects.get(name="ops admin")])
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    assert password_login(client, "pat", "pat-password-for-tests").status_code == 302  # on to the code page

    refused = client.get("/metrics")

    assert refused.status_code == 403
    assert b"p2p_orders_created_total" not in refused.content
    assert b"second factor" in refused.content  # says what is missing
    assert client.post(OTP, {"code": totp_code(device), "next": "/admin/"}).status_code == 302
    assert client.get("/metrics").status_code == 200


def test_metrics_forbidden_in_production_to_verified_staff_with_no_role(client, settings, django_user_model):
    """Issue 22, finding 6: staff with no role see no business state, on the dashboard nor here."""
    settings.PRODUCTION = True
    newcomer = django_user_model.objects.create_user("newcomer", is_staff=True)
    client.force_login(newcomer)  # password and one-time code

    refused = client.get("/metrics")

    assert refused.status_code == 403 and b"p2p_orders_created_total" not in refused.content
    newcomer.groups.set([Group.objects.get(name="viewer")])
    assert client.get("/metrics").status_code == 200


def test_metrics_expose_the_runbook_metrics_with_the_fixture_values(client, market):
    m = scrape(client)
    bsc, eth = (("chain", "bsc"),), (("chain", "ethereum"),)
    assert m[("p2p_orders_created_total", (("chain", "bsc"), ("token", "USDT")))] == 10
    assert m[("p2p_orders_created_total", (("chain", "ethereum"), ("token", "USDC")))] == 1
    assert m[("p2p_orders_completed_total", bsc)] == 4
    assert m[("p2p_orders_completed_total", eth)] == 1
    assert m[("p2p_orders_disputed_total", bsc)] == 3  # two open, one resolved
    assert m[("p2p_orders_expired_total", (("chain", "bsc"), ("reason", "seller_timeout")))] == 2
    assert m[("p2p_orders_expired_total", (("chain", "bsc"), ("reason", "buyer_timeout")))] == 1
    assert m[("p2p_platform_fees_collected_total", (("chain", "bsc"), ("token", "USDT")))] == 5
    assert m[("p2p_platform_fees_collected_total", (("chain", "ethereum"), ("token", "USDC")))] == 0.5
    assert m[("p2p_open_disputes", bsc)] == 2
    assert m[("p2p_open_disputes", eth)] == 0
    assert m[("p2p_dispute_rate_24h_ratio", ())] == pytest.approx(2 / 10)
    assert m[("p2p_large_orders_1h", ())] == 1
    assert m[("blockchain_sync_lag_blocks", bsc)] == 150
    assert m[("blockchain_sync_lag_blocks", eth)] == 2
    assert m[("blockchain_sync_last_block", bsc)] == 1000
    assert m[("blockchain_rpc_latency_seconds", (("chain", "bsc"), ("provider", "fallback")))] == pytest.approx(0.12)
    assert ("blockchain_rpc_latency_seconds", (("chain", "bsc"), ("provider", "primary"))) not in m
    assert m[("blockchain_rpc_up", (("chain", "bsc"), ("provider", "primary")))] == 0
    assert m[("blockchain_rpc_using_fallback", bsc)] == 1
    assert m[("celery_tasks_queued", (("queue", "celery"),))] == 4
    assert m[("celery_workers_active", ())] == 1
    assert m[("p2p_contract_paused", bsc)] == 0
    assert m[("p2p_contract_paused", eth)] == 1
    assert m[("p2p_contract_paused_by_backoffice", bsc)] == 0
    assert m[("p2p_contract_paused_by_backoffice", eth)] == 0, "no pause of ours explains it: ContractPaused pages"
    assert m[("p2p_escrow_solvent", bsc)] == 1, "seen short once: no page"
    assert m[("p2p_escrow_solvent", eth)] == 0
    assert m[("p2p_secret_rotations_overdue", ())] == 2  # JWT late, Pinata never recorded
    assert m[("redis_up", ())] == 1
    assert ("backoffice_scrape_ok", ()) not in m


def test_metrics_say_when_the_back_offices_own_pause_explains_paused(client, market, django_user_model):
    """ContractPaused (P0) pages only a pause the back office did not make (ops/prometheus/alerts.yml)."""
    from ops.models import ContractAction

    proposer, approver = (django_user_model.objects.create_user(name) for name in ("carol", "dave"))

    def sent(kind: str, calldata: str, nonce: int, ago: timedelta) -> ContractAction:
        return ContractAction.objects.create(
            chain="ethereum", kind=kind, description=f"{kind}()", to_address=factories.wallet(), calldata=calldata,
            calldata_hash="0x" + "2" * 64, reason="RB-05", status="confirmed", proposed_by=proposer,
            approved_by=approver, signer_address=factories.wallet(7), nonce=nonce, tx_hash=f"0x{nonce:064x}",
            raw_tx="0x02", sent_at=timezone.now() - ago)

    sent("pause", "0x8456cb59", 1, timedelta(minutes=5))
    assert scrape(client)[("p2p_contract_paused_by_backoffice", (("chain", "ethereum"),))] == 1

    sent("unpause", "0x3f4ba83a", 2, timedelta(0))
    metrics.rendered["at"] = 0.0  # a new body, not the one rendered within the last second
    assert scrape(client)[("p2p_contract_paused_by_backoffice", (("chain", "ethereum"),))] == 0, \
        "paused again after our unpause: not ours"


def test_metrics_scrape_does_not_scan_the_orders_table(client, market):
    metrics.reset_cache()
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200
    on_orders = [q["sql"] for q in ctx.captured_queries if re.search(r'\bFROM\s+"?orders"?\b', q["sql"], re.I)]
    assert on_orders, "the dispute rate and large-order gauges read the last day / hour of orders"
    for sql in on_orders:
        assert re.search(r"\bWHERE\s+\"?(orders\"?\.)?\"?created_at\"?\s*>", sql, re.I), sql


def test_metrics_with_redis_stopped_still_scrape_the_database_part(client, market, own_redis):  # noqa: F811
    own_redis.terminate()
    own_redis.wait(timeout=10)
    import ops.monitoring.health

    ops.monitoring.health._redis_client = None
    m = scrape(client)
    assert m[("redis_up", ())] == 0
    assert m[("p2p_orders_completed_total", (("chain", "bsc"),))] == 4


def test_metrics_every_metric_of_the_alert_rules_is_exported(client, market):
    exported = {name for name, _ in scrape(client)}
    used = set()
    for expr in re.findall(r"expr:\s*(>\s*\n(?:\s{10,}.*\n)+|.*)", RULES.read_text()):
        used |= set(re.findall(r"\b((?:p2p|blockchain|celery|redis|db|backoffice|backup|sanctions)_[a-z0-9_]+)",
                               expr))
    assert used >= {"p2p_contract_paused", "blockchain_sync_lag_blocks", "celery_tasks_queued",
                    "p2p_secret_rotations_overdue"}
    # Read from a live node per configured chain (none here): test_health's clock test scrapes it from an anvil.
    from_a_node = {"blockchain_clock_skew_seconds"}
    # Exported only with DATABASE_REPLICA_URL set (none here): test_replica scrapes them from a real replica.
    from_a_replica = {"db_replica_up", "db_replica_in_use", "db_replica_lag_seconds"}
    assert from_a_replica <= used
    # Exported only with SANCTIONS_LIST_URL set (none here): tests/ops/test_sanctions_monitoring.py scrapes it.
    from_a_list_url = {"sanctions_list_refresh_age_seconds"}
    assert from_a_list_url <= used
    missing = sorted(name for name in used - from_a_node - from_a_replica - from_a_list_url if name not in exported)
    assert not missing, f"alerts.yml uses metrics /metrics does not export: {missing}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian's prometheus package) not installed")
def test_metrics_alert_rules_pass_promtool_check():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rpc_counts_that_could_not_be_saved_are_saved_by_the_next_save(client, db, monkeypatch):
    """The database refusing a save (injected) loses no count: the next save adds them, once."""
    from django.db import OperationalError

    from chain import providers
    from chain.rpc import RpcClient

    worker = RpcClient("bsc", [("primary", "http://primary.example"), ("fallback", "http://fallback.example")])
    worker.providers[0].counts["rate_limited"] += 5
    worker.count_split("fallback", "timeout")
    real = providers._add_counts

    def refused(chain, counts):
        raise OperationalError("the database is restarting")

    monkeypatch.setattr(providers, "_add_counts", refused)
    providers.save_provider_states("bsc", worker)  # no exception: the sync's own result stands
    monkeypatch.setattr(providers, "_add_counts", real)
    worker.providers[0].counts["rate_limited"] += 1
    providers.save_provider_states("bsc", worker)
    providers.save_provider_states("bsc", worker)
    m = scrape(client)
    assert m[("blockchain_rpc_rate_limited_total", (("chain", "bsc"), ("provider", "primary")))] == 6
    assert m[("blockchain_getlogs_splits_total", (("chain", "bsc"), ("reason", "timeout")))] == 1


def test_metrics_count_rate_limit_waits_and_splits_saved_by_several_workers(client, db):
    """Each worker's sync adds what its own client counted since its last save: totals never go backwards."""
    from chain.providers import save_provider_states
    from chain.rpc import RpcClient

    workers = [RpcClient("bsc", [("primary", "http://primary.example"), ("fallback", "http://fallback.example")])
               for _ in range(2)]
    for n, worker in enumerate(workers, start=1):
        primary = worker.providers[0]
        primary.counts["rate_limited"] += 2 * n
        primary.counts["rate_limit_wait_seconds"] += 1.5 * n
        primary.counts["budget_wait_seconds"] += 0.25
        worker.count_split("primary", "too_big")
        worker.count_split("fallback", "timeout")
        save_provider_states("bsc", worker)
    save_provider_states("bsc", workers[0])  # saved again with nothing new: no double count
    m = scrape(client)
    primary = (("chain", "bsc"), ("provider", "primary"))
    assert m[("blockchain_rpc_rate_limited_total", primary)] == 6
    assert m[("blockchain_rpc_rate_limit_wait_seconds_total", primary)] == 4.5
    assert m[("blockchain_rpc_budget_wait_seconds_total", primary)] == 0.5
    assert m[("blockchain_rpc_rate_limited_total", (("chain", "bsc"), ("provider", "fallback")))] == 0
    assert m[("blockchain_getlogs_splits_total", (("chain", "bsc"), ("reason", "too_big")))] == 2
    assert m[("blockchain_getlogs_splits_total", (("chain", "bsc"), ("reason", "timeout")))] == 2
