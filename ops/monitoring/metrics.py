"""The runbook's business and infrastructure metrics (§2) as a Prometheus collector.

Cheap at any size: business counters come from the daily rollup (a few hundred rows), sync state
from the cursors, RPC state from the provider table, queue depth and memory from Redis. Nothing
scans the orders table. A scrape's result is reused for CACHE_SECONDS.
"""
from __future__ import annotations

import shutil
import threading
import time

from django.conf import settings
from django.db import connection
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ops.actions.selectors import paused_by_back_office
from ops.backups.selectors import backup_health
from ops.models import SecretSchedule

from .health import TASKS_DONE_KEY, celery_counts, health, redis_client, schedule_runs, unconsumed_queues
from .selectors import large_order_rule

CACHE_SECONDS = 2.0
_lock = threading.Lock()
_cache: dict = {"at": 0.0, "families": None, "refreshing": False}


def _rows(sql: str, params=None) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        return cur.fetchall()


def _business() -> list:
    created = CounterMetricFamily("p2p_orders_created", "Orders created", labels=["chain", "token"])
    completed = CounterMetricFamily("p2p_orders_completed", "Orders completed", labels=["chain"])
    disputed = CounterMetricFamily("p2p_orders_disputed", "Orders disputed (open or resolved)", labels=["chain"])
    expired = CounterMetricFamily("p2p_orders_expired", "Orders closed by a timeout", labels=["chain", "reason"])
    fees = CounterMetricFamily("p2p_platform_fees_collected", "Platform fees of completed orders, token units",
                               labels=["chain", "token"])
    open_disputes = GaugeMetricFamily("p2p_open_disputes", "Orders in dispute now", labels=["chain"])
    per_chain: dict[str, list[float]] = {}
    for chain, token, n, done, disp, open_d, exp, auto, fee in _rows(
            "SELECT chain, token_symbol, SUM(orders), SUM(completed), "
            "SUM(disputed + resolved_buyer + resolved_seller), "
            "SUM(disputed), SUM(expired), SUM(auto_released), SUM(completed_fees) FROM chain_daily_order_stats "
            "GROUP BY chain, token_symbol"):
        created.add_metric([chain, token], float(n))
        fees.add_metric([chain, token], float(fee))
        acc = per_chain.setdefault(chain, [0, 0, 0, 0, 0])
        for i, v in enumerate((done, disp, exp, auto, open_d)):
            acc[i] += float(v)
    for chain in settings.CHAINS:
        done, disp, exp, auto, open_d = per_chain.get(chain, [0, 0, 0, 0, 0])
        completed.add_metric([chain], done)
        disputed.add_metric([chain], disp)
        expired.add_metric([chain, "seller_timeout"], exp)
        expired.add_metric([chain, "buyer_timeout"], auto)
        open_disputes.add_metric([chain], open_d)
    # RB-04's rate and the large-order rule read only the last day / hour: a range on the created_at index.
    rate = GaugeMetricFamily("p2p_dispute_rate_24h_ratio", "Orders created in the last 24 h now disputed / all")
    (total, disp), = _rows("SELECT COUNT(*), COUNT(*) FILTER (WHERE status = 'disputed') FROM orders "
                           "WHERE created_at > NOW() - INTERVAL '24 hours'")
    rate.add_metric([], disp / total if total else 0.0)
    large = GaugeMetricFamily("p2p_large_orders_1h", "Orders over LARGE_ORDER_USDT (in USD stablecoins) created in "
                                                     "the last hour")
    rule, params = large_order_rule()
    (n_large,), = _rows(f"SELECT COUNT(*) FROM orders WHERE created_at > NOW() - INTERVAL '1 hour' AND {rule}", params)
    large.add_metric([], float(n_large))
    return [created, completed, disputed, expired, fees, open_disputes, rate, large]


def _chain() -> list:
    lag = GaugeMetricFamily("blockchain_sync_lag_blocks", "Chain head minus the sync cursor", labels=["chain"])
    last = GaugeMetricFamily("blockchain_sync_last_block", "Last block applied by the sync", labels=["chain"])
    age = GaugeMetricFamily("blockchain_sync_cursor_age_seconds", "Seconds since the cursor moved", labels=["chain"])
    for chain, last_block, head, seconds in _rows(
            "SELECT chain, last_block, head_block, GREATEST(EXTRACT(EPOCH FROM (now() - updated_at)), 0) "
            "FROM event_sync_cursor"):
        last.add_metric([chain], float(last_block))
        age.add_metric([chain], float(seconds))
        if head is not None:
            lag.add_metric([chain], float(max(head - last_block, 0)))
    latency = GaugeMetricFamily("blockchain_rpc_latency_seconds", "Moving average RPC latency",
                                labels=["chain", "provider"])
    up = GaugeMetricFamily("blockchain_rpc_up", "1 when the provider's circuit is closed", labels=["chain", "provider"])
    fallback = GaugeMetricFamily("blockchain_rpc_using_fallback", "1 when the fallback serves the chain",
                                 labels=["chain"])
    limited = CounterMetricFamily("blockchain_rpc_rate_limited", "Rate-limit answers waited out (not failures)",
                                  labels=["chain", "provider"])
    limit_wait = CounterMetricFamily("blockchain_rpc_rate_limit_wait_seconds",
                                     "Seconds requests spent waiting out rate limits (summed over requests: "
                                     "4 fetch threads waiting 1 s count 4 s)",
                                     labels=["chain", "provider"])
    budget_wait = CounterMetricFamily("blockchain_rpc_budget_wait_seconds",
                                      "Seconds requests waited for the <CHAIN>_RPC_MAX_RPS budget",
                                      labels=["chain", "provider"])
    splits = CounterMetricFamily("blockchain_getlogs_splits", "eth_getLogs ranges halved", labels=["chain", "reason"])
    halved: dict[tuple[str, str], float] = {}
    for chain, role, state, ms, in_use, n_limited, waited, budget, too_big, timeout in _rows(
            "SELECT chain, role, state, latency_ms, in_use, rate_limited, rate_limit_wait_seconds, "
            "budget_wait_seconds, getlogs_splits_too_big, getlogs_splits_timeout FROM chain_rpc_providers"):
        limited.add_metric([chain, role], float(n_limited))
        limit_wait.add_metric([chain, role], float(waited))
        budget_wait.add_metric([chain, role], float(budget))
        for reason, n in (("too_big", too_big), ("timeout", timeout)):
            halved[(chain, reason)] = halved.get((chain, reason), 0.0) + float(n)
        if ms is not None:
            latency.add_metric([chain, role], ms / 1000)
        up.add_metric([chain, role], 1.0 if state == "closed" else 0.0)
        if role == "fallback":
            fallback.add_metric([chain], 1.0 if in_use else 0.0)
    for (chain, reason), n in halved.items():
        splits.add_metric([chain, reason], n)
    paused = GaugeMetricFamily("p2p_contract_paused", "1 when the escrow is paused", labels=["chain"])
    # The ContractPaused rule pages only a pause the back office did not make: its own already paged (automatic) or
    # was made by staff who know (the in-app alert is inhibited the same way).
    ours = GaugeMetricFamily("p2p_contract_paused_by_backoffice", "1 when the escrow is paused and the back "
                             "office's own last pause (newer than its last unpause) explains it", labels=["chain"])
    # 0 only for the check's confirmed insolvency (short at the cursor and again at a later block): the rule on it
    # pages P0, and a read seen once, or an escrow holding more than its orders, is no page.
    solvent = GaugeMetricFamily("p2p_escrow_solvent", "0 when the escrow held less than its open orders at two "
                                "blocks (the contracts check's confirmed insolvency), else 1", labels=["chain"])
    for chain, is_paused, ok in _rows("SELECT chain, paused, CASE WHEN solvency_short_since < solvency_block THEN "
                                      "false WHEN solvency_ok IS NOT NULL THEN true END FROM chain_state"):
        if is_paused is not None:
            paused.add_metric([chain], 1.0 if is_paused else 0.0)
            ours.add_metric([chain], 1.0 if is_paused and paused_by_back_office(chain) else 0.0)
        if ok is not None:
            solvent.add_metric([chain], 1.0 if ok else 0.0)
    return [lag, last, age, latency, up, fallback, limited, limit_wait, budget_wait, splits, paused, ours, solvent,
            _clock_skew()]


def _clock_skew():
    """The newest block's timestamp minus the server's clock, per chain, from the shared health result (cached:
    a scrape adds no RPC call of its own while /health or the dashboard has just run the checks)."""
    skew = GaugeMetricFamily("blockchain_clock_skew_seconds",
                             "Newest block's timestamp minus the server's clock (> 0: the chain is ahead)",
                             labels=["chain"])
    checks = health()["checks"]
    for chain, cfg in settings.CHAINS.items():
        value = checks.get(f"rpc_{cfg['short']}", {}).get("clock_skew_seconds")
        if value is not None:
            skew.add_metric([chain], float(value))
    return skew


def _ops() -> list:
    overdue = GaugeMetricFamily("p2p_secret_rotations_overdue", "Secrets past their rotation date")
    overdue.add_metric([], float(SecretSchedule.states().count("overdue")))
    alerts = GaugeMetricFamily("p2p_alerts_open", "Unacknowledged alerts", labels=["severity"])
    firing = GaugeMetricFamily("p2p_alerts_firing", "Alerts whose condition holds now (not inhibited)",
                               labels=["severity"])
    for severity, unacknowledged, now in _rows(
            "SELECT severity, COUNT(*) FILTER (WHERE acknowledged_at IS NULL), "
            "COUNT(*) FILTER (WHERE resolved_at IS NULL AND inhibited = '') FROM ops_alerts "
            "WHERE acknowledged_at IS NULL OR resolved_at IS NULL GROUP BY severity"):
        alerts.add_metric([severity], float(unacknowledged))
        firing.add_metric([severity], float(now))
    conns = GaugeMetricFamily("db_connections_used_ratio", "PostgreSQL connections in use / max_connections")
    (used, limit), = _rows("SELECT (SELECT COUNT(*) FROM pg_stat_activity), current_setting('max_connections')::int")
    conns.add_metric([], used / limit)
    disk = GaugeMetricFamily("backoffice_disk_used_ratio", "Used fraction of the disk holding the project")
    usage = shutil.disk_usage(settings.BASE_DIR)
    disk.add_metric([], usage.used / usage.total)
    # +Inf when there has never been one: the age alerts fire from the first scrape of a new installation.
    backups = backup_health()
    backup_age = GaugeMetricFamily("backup_last_success_age_seconds", "Seconds since the last good backup finished")
    backup_age.add_metric([], backups.backup_age.total_seconds() if backups.backup_age is not None else float("inf"))
    restore_age = GaugeMetricFamily("backup_restore_test_last_success_age_seconds",
                                    "Seconds since the last passed restore test finished")
    restore_age.add_metric([], backups.restore_test_age.total_seconds() if backups.restore_test_age is not None
                           else float("inf"))
    return [overdue, alerts, firing, conns, disk, backup_age, restore_age, *_beat()]


def _sanctions() -> list:
    """Sanctions screening: list freshness (the refresh age only while SANCTIONS_LIST_URL is set: the SanctionsListStale
    rule), entries per current list, unhandled hits, the screening queue and each oracle's last answer."""
    from disputes.sanctions import selectors as sanctions

    out = []
    refresh = sanctions.refresh_age_seconds()
    if refresh is not None:
        age = GaugeMetricFamily("sanctions_list_refresh_age_seconds", "Seconds since the stalest SANCTIONS_LIST_URL "
                                "last served a good file (+Inf before its first import)")
        age.add_metric([], refresh)
        out.append(age)
    entries = GaugeMetricFamily("sanctions_list_entries", "EVM addresses in each list's current version",
                                labels=["list"])
    for version in sanctions.current_versions():
        entries.add_metric([version.list_key], float(version.entry_count))
    state = sanctions.screening_state()
    unhandled = GaugeMetricFamily("sanctions_hits_unhandled", "Sanctions hits whose review flag is not resolved")
    unhandled.add_metric([], float(state.unhandled_hits))
    pending = GaugeMetricFamily("sanctions_wallets_pending", "Wallets waiting to be screened (counted up to "
                                f"{sanctions.PENDING_COUNT_CAP:,})")
    pending.add_metric([], float(state.pending))
    oldest = GaugeMetricFamily("sanctions_screening_oldest_pending_seconds",
                               "Seconds the oldest wallet waiting to be screened has waited (0: none waits)")
    oldest.add_metric([], max(0.0, time.time() - state.pending_oldest.timestamp()) if state.pending_oldest else 0.0)
    hits = CounterMetricFamily("sanctions_hits", "Our wallets named by a sanctions list or oracle", labels=["source"])
    for source, n in _rows("SELECT source, count(*) FROM sanctions_hits GROUP BY source"):
        hits.add_metric([source], float(n))
    checked = GaugeMetricFamily("sanctions_oracle_last_check_age_seconds", "Seconds since each chain's sanctions "
                                "oracle last answered", labels=["chain"])
    failing = GaugeMetricFamily("sanctions_oracle_failing", "1 when the chain's oracle failed after its last answer",
                                labels=["chain"])
    for chain, seconds, failed in _rows("SELECT chain, EXTRACT(EPOCH FROM (now() - last_checked_at)), "
                                        "last_error <> '' FROM sanctions_oracle_checks"):
        if seconds is not None:
            checked.add_metric([chain], max(0.0, float(seconds)))
        failing.add_metric([chain], 1.0 if failed else 0.0)
    return [*out, entries, unhandled, pending, oldest, hits, checked, failing]


def _beat() -> list:
    """Who watches the checks: every beat entry's time since its last run and whether it is late or disabled."""
    since = GaugeMetricFamily("celery_beat_schedule_seconds_since_run", "Seconds since beat last sent the entry",
                              labels=["schedule"])
    late = GaugeMetricFamily("celery_beat_schedule_late", "1 when an enabled entry missed its period (beat down?)",
                             labels=["schedule"])
    enabled = GaugeMetricFamily("celery_beat_schedule_enabled", "1 when the entry is enabled, 0 when staff disabled "
                                "it (or it is not registered)", labels=["schedule"])
    for run in schedule_runs():
        if run.seconds_since_run is not None:
            since.add_metric([run.name], run.seconds_since_run)
        late.add_metric([run.name], float(run.late))
        enabled.add_metric([run.name], float(run.enabled))
    return [since, late, enabled]


def _replica() -> list:
    """The read replica (only when one is configured): up, lag, and whether pages read from it."""
    from backoffice import replica

    status = replica.replica_status()
    if not status.configured:
        return []
    up = GaugeMetricFamily("db_replica_up", "1 when the read replica answers and is a standby in recovery")
    up.add_metric([], 1.0 if status.reachable else 0.0)
    in_use = GaugeMetricFamily("db_replica_in_use", "1 when the read-only pages read from the replica "
                               "(reachable, lag within DATABASE_REPLICA_MAX_LAG_SECONDS)")
    in_use.add_metric([], 1.0 if status.usable else 0.0)
    out = [up, in_use]
    if status.lag_seconds is not None:
        lag = GaugeMetricFamily("db_replica_lag_seconds", "How stale the read replica may be: 0 when it has replayed "
                                "all the primary's WAL, else the age of its newest replayed transaction")
        lag.add_metric([], status.lag_seconds)
        out.append(lag)
    if status.behind_bytes is not None:
        behind = GaugeMetricFamily("db_replica_behind_bytes", "WAL the primary has written and the replica has not "
                                   "replayed")
        behind.add_metric([], float(status.behind_bytes))
        out.append(behind)
    return out


def _redis() -> list:
    out = []
    try:
        info = redis_client().info("memory")
        workers, queues = celery_counts()
    except Exception:
        up = GaugeMetricFamily("redis_up", "1 when Redis answers")
        up.add_metric([], 0.0)
        return [up]
    up = GaugeMetricFamily("redis_up", "1 when Redis answers")
    up.add_metric([], 1.0)
    used = GaugeMetricFamily("redis_memory_used_bytes", "Redis used_memory")
    used.add_metric([], float(info.get("used_memory", 0)))
    limit = GaugeMetricFamily("redis_maxmemory_bytes", "Redis maxmemory (0 = unlimited)")
    limit.add_metric([], float(info.get("maxmemory", 0)))
    q = GaugeMetricFamily("celery_tasks_queued", "Tasks waiting in each Celery queue", labels=["queue"])
    for queue, depth in queues.items():
        q.add_metric([queue], float(depth))
    orphan = GaugeMetricFamily(
        "celery_queue_unconsumed", "1 for a sync.<chain> queue holding tasks for a chain not in CHAINS: no worker "
        "consumes it (its depth is in celery_tasks_queued). Run register_schedules to disable the chain's beat "
        "entries, then purge the queue", labels=["queue"])
    for queue in unconsumed_queues(queues):
        orphan.add_metric([queue], 1.0)
    stats = redis_client().info("stats")
    hits = CounterMetricFamily("redis_keyspace_hits", "Redis keyspace hits")
    hits.add_metric([], float(stats.get("keyspace_hits", 0)))
    misses = CounterMetricFamily("redis_keyspace_misses", "Redis keyspace misses")
    misses.add_metric([], float(stats.get("keyspace_misses", 0)))
    done = CounterMetricFamily("celery_tasks_completed", "Tasks finished by the workers", labels=["state"])
    for state, n in (redis_client().hgetall(TASKS_DONE_KEY) or {}).items():
        done.add_metric([state.decode() if isinstance(state, bytes) else state], float(n))
    out += [hits, misses, done]
    w = GaugeMetricFamily("celery_workers_active", "Celery workers with a fresh heartbeat")
    w.add_metric([], float(workers))
    out += [up, used, limit, q, orphan, w]
    return out


class BackofficeCollector:
    """Registered once on the default registry; django-prometheus serves it with its own metrics."""

    def describe(self):
        return []  # no collect() at registration time: it would query the database during start-up

    def collect(self):
        now = time.monotonic()
        with _lock:
            cached = _cache["families"]
            # One scrape refreshes at a time; concurrent ones get the previous families meanwhile.
            if cached is not None and (now - _cache["at"] < CACHE_SECONDS or _cache.get("refreshing")):
                families = cached
            else:
                families = None
                _cache["refreshing"] = True
        if families is None:
            try:
                families = _collect()
                with _lock:
                    _cache.update(at=time.monotonic(), families=families)
            finally:
                with _lock:
                    _cache["refreshing"] = False
        yield from families


def _drills() -> list:
    """RB-05 rehearsed: per chain, the age of the last passed pause drill and the blocks it took to pause."""
    age = GaugeMetricFamily("p2p_pause_drill_last_passed_age_seconds",
                            "Seconds since the last passed pause drill (+Inf: never)", labels=["chain"])
    blocks = GaugeMetricFamily("p2p_pause_drill_pause_blocks", "Blocks from the drain to paused() in the last passed "
                               "pause drill", labels=["chain"])
    seconds = GaugeMetricFamily("p2p_pause_drill_pause_seconds", "Seconds from the drain to paused() in the last "
                                "passed pause drill", labels=["chain"])
    rows = {chain: (started, pause_blocks, pause_seconds) for chain, started, pause_blocks, pause_seconds in _rows(
        "SELECT DISTINCT ON (chain) chain, EXTRACT(EPOCH FROM now() - started_at), pause_blocks, pause_seconds "
        "FROM ops_pause_drills WHERE status = 'passed' ORDER BY chain, started_at DESC")}
    for chain in settings.CHAINS:
        started, pause_blocks, pause_seconds = rows.get(chain, (None, None, None))
        age.add_metric([chain], float(started) if started is not None else float("inf"))
        if pause_blocks is not None:
            blocks.add_metric([chain], float(pause_blocks))
            seconds.add_metric([chain], float(pause_seconds))
    return [age, blocks, seconds]


def _collect() -> list:
    families = []
    try:
        families += _business() + _chain() + _ops() + _drills() + _sync_catchup()
        families += _sanctions()
    except Exception:
        connection.close()
        scrape_ok = GaugeMetricFamily("backoffice_scrape_ok", "1 when the database part of the scrape worked")
        scrape_ok.add_metric([], 0.0)
        families.append(scrape_ok)
    families += _replica() + _redis()
    return families


# The rendered /metrics body (ops.monitoring.views): one render per RENDER_SECONDS whatever the concurrency.
RENDER_SECONDS = 1.0
rendered: dict = {"at": 0.0, "body": b"", "content_type": "text/plain"}
render_lock = threading.Lock()


def reset_cache() -> None:
    with _lock:
        _cache.update(at=0.0, families=None)
    rendered.update(at=0.0, body=b"")


_registered = False


def register() -> None:
    global _registered
    if _registered:
        return
    from prometheus_client import REGISTRY

    REGISTRY.register(BackofficeCollector())
    _registered = True


def _sync_catchup() -> list:
    """Each chain's catch-up in progress (chain.catchup: blocks done of blocks to go, events, rate, estimated
    finish), the eth_getLogs its sync kept in flight, and each provider's eth_getLogs block cap."""
    from chain import catchup

    active = GaugeMetricFamily("blockchain_sync_catchup_active", "1 while the chain's sync catches up (a run "
                               f"started over {catchup.MIN_BLOCKS} blocks behind, the head not reached since)",
                               labels=["chain"])
    done = GaugeMetricFamily("blockchain_sync_catchup_blocks_done", "Blocks the catch-up has applied",
                             labels=["chain"])
    total = GaugeMetricFamily("blockchain_sync_catchup_blocks_total", "Blocks the catch-up has to apply (the head "
                              "minus the confirmations at its latest run, minus the cursor when it began)",
                              labels=["chain"])
    events = GaugeMetricFamily("blockchain_sync_catchup_events", "Events the catch-up has applied", labels=["chain"])
    rate = GaugeMetricFamily("blockchain_sync_catchup_blocks_per_second", "The catch-up's current rate",
                             labels=["chain"])
    eta = GaugeMetricFamily("blockchain_sync_catchup_eta_seconds", "Seconds until the catch-up reaches its target "
                            "at the current rate", labels=["chain"])
    in_flight = GaugeMetricFamily("blockchain_sync_in_flight", "eth_getLogs the catch-up kept in flight at its last "
                                  "run (up to <PREFIX>_SYNC_MAX_IN_FLIGHT)", labels=["chain"])
    running = {p.chain: p for p in catchup.in_progress()}
    for chain in settings.CHAINS:
        active.add_metric([chain], 1.0 if chain in running else 0.0)
    for chain, progress in running.items():
        done.add_metric([chain], float(progress.blocks_done))
        total.add_metric([chain], float(progress.blocks_total))
        events.add_metric([chain], float(progress.events))
        if progress.rate is not None:
            rate.add_metric([chain], progress.rate)
        if progress.eta_seconds is not None:
            eta.add_metric([chain], progress.eta_seconds)
        if progress.in_flight is not None:
            in_flight.add_metric([chain], float(progress.in_flight))
    cap = GaugeMetricFamily("blockchain_rpc_max_block_range", "Most blocks the provider answers in one eth_getLogs "
                            "(<PREFIX>_RPC_MAX_BLOCK_RANGE, or learnt from its refusal)", labels=["chain", "provider"])
    for chain, role, blocks in _rows("SELECT chain, role, max_block_range FROM chain_rpc_providers "
                                     "WHERE max_block_range IS NOT NULL"):
        cap.add_metric([chain, role], float(blocks))
    return [active, done, total, events, rate, eta, in_flight, cap]
