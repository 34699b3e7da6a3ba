"""Scheduled checks (runbook §4, §5 and the alert table): each reads, decides, and raises alerts."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.db.models.functions import Coalesce
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.alerts.services import raise_alert
from backoffice.durations import age, human_duration
from chain.config import configured_chains, get_chain_config
from chain.models import ChainState, EventSyncCursor
from chain.safe import SafeState

from . import health as health_checks
from .models import OpsReport, PlatformFlag, SecretSchedule

logger = logging.getLogger(__name__)

SYNC_STUCK_AFTER = timedelta(minutes=10)


def sync_lag_threshold() -> int:
    """RB-03: lag (blocks) over which the sync is a P2; the platform setting, 100 when unset."""
    return int(PlatformFlag.get("SYNC_LAG_ALERT_BLOCKS", 100))


def _one(sql: str, params=None) -> dict:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        names = [c.name for c in cur.description]
        return dict(zip(names, cur.fetchone()))


def _growth_per_day(size_bytes: int) -> float | None:
    """The database's growth in bytes per day, from the oldest daily check of the last eight days to now."""
    since = timezone.now() - timedelta(days=8)
    first = (OpsReport.objects.filter(kind="daily_check", created_at__gte=since, data__has_key="database_bytes")
             .order_by("created_at").first())
    if first is None:
        return None
    days = (timezone.now() - first.created_at).total_seconds() / 86_400
    return (size_bytes - int(first.data["database_bytes"])) / days if days >= 0.5 else None


def vacuum_database() -> OpsReport:
    """Runbook §5, weekly (`vacuumdb -z`): VACUUM (ANALYZE) of the whole database, outside any transaction, one
    at a time (an advisory lock), with no statement timeout (a role's own would cancel it every week); a stored
    report with its duration whatever happened, and a P3 alert when it fails."""
    started = time.monotonic()
    status, text = "failed", ""
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_try_advisory_lock(hashtext('ops-vacuum'))")
            if not cur.fetchone()[0]:
                return OpsReport.objects.create(kind="vacuum", status="skipped", data={},
                                                text="Another VACUUM (ANALYZE) is running: skipped.")
            try:
                cur.execute("SET statement_timeout = 0")
                cur.execute("VACUUM (ANALYZE)")
                status, text = "ok", f"VACUUM (ANALYZE) of the database took {time.monotonic() - started:.1f} s."
            finally:
                cur.execute("RESET statement_timeout")
                cur.execute("SELECT pg_advisory_unlock(hashtext('ops-vacuum'))")
    except DatabaseError as exc:
        connection.close()  # a connection that died mid-way is not reused
        text = text or f"VACUUM (ANALYZE) failed after {time.monotonic() - started:.1f} s: {exc}"
    report = OpsReport.objects.create(kind="vacuum", status=status, text=text,
                                      data={"seconds": round(time.monotonic() - started, 1)})
    if status == "failed":
        raise_alert(key=f"vacuum-failed:{timezone.now():%Y-%m-%d}", severity="P3", source="vacuum_database",
                    title="Weekly VACUUM (ANALYZE) failed", message=text)
    return report


def daily_operations_check() -> OpsReport:
    """Runbook §4 as a stored report, sent to the alert channels (P3, information)."""
    checks = health_checks.run_checks()
    status = health_checks.overall(checks)
    stats = _one(
        "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE status = 'completed') AS completed, "
        "COUNT(*) FILTER (WHERE status = 'disputed') AS disputed, COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled, "
        "COUNT(*) FILTER (WHERE status = 'expired') AS expired, "
        "COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume "
        "FROM orders WHERE created_at > NOW() - INTERVAL '24 hours'")
    pending = _one("SELECT COUNT(*) AS pending_disputes FROM orders WHERE status = 'disputed'")["pending_disputes"]
    cursors = [{"chain": c.chain, "last_block": c.last_block, "lag": c.lag_blocks,
                "seconds_since_update": int(age(c.updated_at).total_seconds())}
               for c in EventSyncCursor.objects.all()]
    size, size_bytes = _one("SELECT pg_size_pretty(pg_database_size(current_database())) AS size, "
                            "pg_database_size(current_database()) AS bytes").values()
    growth = _growth_per_day(size_bytes)
    from .selectors import BACKUP_MAX_AGE, RESTORE_TEST_MAX_AGE, age_text, backup_health

    backups = backup_health()
    backup_line = (f"last good backup {age_text(backups.backup_age)}"
                   + (f" ({backups.last_backup.size_bytes / 1e6:.1f} MB)" if backups.last_backup else "")
                   + (f" — OVER {BACKUP_MAX_AGE.total_seconds() / 3600:.0f} h" if backups.backup_stale else "")
                   + f"; last passed restore test {age_text(backups.restore_test_age)}"
                   + (f" — OVER {RESTORE_TEST_MAX_AGE.days} days" if backups.restore_test_stale else ""))
    # The runbook's "error count" item: what the checks raised in the day, and what is still waiting for someone.
    raised_24h = dict(Alert.objects.filter(created_at__gt=timezone.now() - timedelta(hours=24)).values("severity")
                      .annotate(n=Count("pk")).order_by("severity").values_list("severity", "n"))
    still_open = Alert.objects.filter(acknowledged_at__isnull=True).count()
    data = {"health": status, "checks": checks, "orders_24h": {k: str(v) for k, v in stats.items()},
            "alerts_24h": raised_24h, "alerts_open": still_open,
            "pending_disputes": pending, "sync": cursors, "database_size": size, "database_bytes": size_bytes,
            "database_growth_bytes_per_day": growth,
            "redis_memory_mb": checks.get("redis", {}).get("memory_used_mb"),
            "celery_workers": checks.get("celery", {}).get("active_workers"),
            "backups": {"last_good_backup_age_s": _seconds(backups.backup_age),
                        "last_passed_restore_test_age_s": _seconds(backups.restore_test_age)}}
    lines = [f"P2P Escrow daily check — {timezone.now():%Y-%m-%d %H:%M} UTC",
             f"1. Health: {status} (" + ", ".join(f"{k}: {v.get('status')}" for k, v in checks.items()) + ")",
             f"2. Orders 24 h: {stats['total']} total, {stats['completed']} completed, {stats['disputed']} disputed, "
             f"{stats['cancelled']} cancelled, {stats['expired']} expired, volume {stats['volume']}",
             f"3. Pending disputes: {pending}",
             "4. Sync: " + "; ".join(f"{c['chain']} block {c['last_block']} lag {c['lag']} "
                                      f"({c['seconds_since_update']} s ago)" for c in cursors),
             f"5. Database size: {size}" + (f", {'+' if growth >= 0 else '−'}{abs(growth) / 1e6:.1f} MB/day over the "
                                            "last week (runbook: growth rate × months to 80%)" if growth is not None else ""),
             f"6. Redis memory: {data['redis_memory_mb']} MB",
             f"7. Celery workers: {data['celery_workers']}",
             f"8. Backups: {backup_line}",
             f"9. Alerts 24 h: {sum(raised_24h.values())} raised"
             + (f" ({', '.join(f'{k} {v}' for k, v in raised_24h.items())})" if raised_24h else "")
             + f"; {still_open} open, not acknowledged"]
    report = OpsReport.objects.create(kind="daily_check", status=status, data=data, text="\n".join(lines))
    raise_alert(key=f"daily-check:{timezone.now():%Y-%m-%d}", severity="P3", source="daily_check",
                title=f"Daily operations check: {status}", message=report.text)
    return report


def _seconds(age: timedelta | None) -> int | None:
    return None if age is None else int(age.total_seconds())


def check_sync() -> list[str]:
    """RB-03 triggers: cursor unchanged for 10 minutes (P1) and lag over the threshold (P2, default 100 blocks)."""
    raised = []
    threshold = sync_lag_threshold()
    now = timezone.now()
    for cursor in EventSyncCursor.objects.filter(chain__in=configured_chains()):
        if now - cursor.updated_at > SYNC_STUCK_AFTER:
            raise_alert(key=f"sync-stuck:{cursor.chain}", severity="P1", source="check_sync",
                        title=f"{cursor.chain} event sync stuck: cursor unchanged since {cursor.updated_at:%H:%M} UTC",
                        message=f"RB-03. Last block {cursor.last_block}, head {cursor.head_block}. "
                                f"Last error: {cursor.last_error[:300] or 'none'}")
            raised.append(f"sync-stuck:{cursor.chain}")
        lag = cursor.lag_blocks
        if lag is not None and lag > threshold:
            raise_alert(key=f"sync-lag:{cursor.chain}", severity="P2", source="check_sync",
                        title=f"{cursor.chain} sync lag {lag} blocks (threshold {threshold})",
                        message="RB-03: check the worker and the RPC providers (RB-07).")
            raised.append(f"sync-lag:{cursor.chain}")
    return raised


def check_contracts() -> list[str]:
    """paused() == true is a P0 (alert table); solvency short is a P0 too. Both kept on ChainState. An owner
    setting (treasury, pool, fees, timeouts, supported tokens) that changed since the last check with no contract
    action of the back office making it is a P1: the owners' own tools, or someone holding their keys."""
    from chain.status import read_contract_status

    raised = []
    for chain in configured_chains():
        status = read_contract_status(chain)
        if not status.ok:
            continue
        detail = {t.symbol: {"escrow": str(t.escrow_balance_at_cursor), "open_orders": str(t.open_orders_total)}
                  for t in status.tokens}
        now, settings_now = timezone.now(), status.owner_settings()
        with transaction.atomic():
            state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
            before, since = state.contract_settings or {}, state.contract_settings_checked_at
            state.paused, state.paused_checked_at, state.solvency_ok = status.paused, now, status.balanced
            state.solvency_checked_at, state.solvency_detail = now, detail
            fields = ["paused", "paused_checked_at", "solvency_ok", "solvency_checked_at", "solvency_detail"]
            # A run that read an older block (an overlapping run, a lagging provider) records nothing over a newer.
            if not (before.get("escrow") == settings_now["escrow"] and (before.get("block") or 0) > status.block):
                state.contract_settings, state.contract_settings_checked_at = settings_now, now
                fields += ["contract_settings", "contract_settings_checked_at"]
            state.save(update_fields=fields)
            # In the same transaction: a crash cannot record the change and lose its alert.
            unexplained = (_settings_changed_outside(chain, before, settings_now, since)
                           if "contract_settings" in fields and before.get("escrow") == settings_now["escrow"] else [])
            if unexplained:
                raise_alert(key=f"contract-settings-changed:{chain}", severity="P1", source="check_contracts",
                            title=f"{chain}: escrow settings changed outside the back office",
                            message="; ".join(unexplained) + ". No contract action of the back office made this: "
                                    "check with every Safe owner that it was intended, and read the contract status page.")
                raised.append(f"contract-settings-changed:{chain}")
        if status.paused:
            raise_alert(key=f"contract-paused:{chain}", severity="P0", source="check_contracts",
                        title=f"{chain} escrow is PAUSED", message="RB-05: all trading is blocked on this chain.")
            raised.append(f"contract-paused:{chain}")
        if not status.solvent:
            short = [f"{t.symbol} short {-t.difference}" for t in status.tokens if not t.solvent]
            raise_alert(key=f"escrow-insolvent:{chain}", severity="P0", source="check_contracts",
                        title=f"{chain} escrow holds less than its open orders", message="; ".join(short))
            raised.append(f"escrow-insolvent:{chain}")
    return raised


def check_contract_actions() -> list[str]:
    """Runbook §5 ("auto-expire/release stops") and the 002 failure alert: per chain, transactions signed or sent
    ACTION_STUCK_SECONDS ago and not mined (P2: replace them), and orders still funded or delivered
    TIMEOUT_OVERDUE_SECONDS past their seller or buyer deadline (P2: the timeout keeper is not doing its job; not
    while the escrow is paused, when it skips the chain on purpose). A failed action pages when it fails."""
    from .models import IN_FLIGHT, ContractAction
    from .timeouts import TIMEOUT_KINDS

    now, raised = timezone.now(), []
    stuck_since = now - timedelta(seconds=settings.ACTION_STUCK_SECONDS)
    overdue_since = now - timedelta(seconds=settings.TIMEOUT_OVERDUE_SECONDS)
    paused = set(ChainState.objects.filter(paused=True).values_list("chain", flat=True))
    for chain in configured_chains():
        stuck = list(ContractAction.objects.filter(chain=chain, status__in=IN_FLIGHT)
                     .annotate(since=Coalesce("sent_at", "signed_at")).filter(since__lt=stuck_since)
                     .order_by("pk").values_list("pk", flat=True)[:20])
        if stuck:
            raise_alert(key=f"actions-stuck:{chain}", severity="P2", source="check_contract_actions",
                        title=f"{chain}: {len(stuck)} contract transaction(s) not mined after "
                              f"{human_duration(settings.ACTION_STUCK_SECONDS)}",
                        message=f"Actions {', '.join(f'#{pk}' for pk in stuck)}: signed or sent, not mined. Open each "
                                "and use “Replace stuck tx…” (fees raised 12.5%), or check the relayer's gas.")
            raised.append(f"actions-stuck:{chain}")
        if chain in paused or _unpaused_since(chain, overdue_since):
            continue  # paused, the keeper skips it on purpose; just unpaused, it is working through the backlog
        overdue = []
        with connection.cursor() as cur:
            for kind, (status, column) in TIMEOUT_KINDS.items():
                # The keeper's own partial index (status, deadline): a range scan of the overdue rows only; an order
                # whose timeout action is in flight is the stuck check's business, not this one's.
                cur.execute(f"SELECT count(*), min({column}) FROM orders o WHERE chain = %s AND status = %s "
                            f"AND {column} < %s AND NOT EXISTS (SELECT 1 FROM ops_contract_actions a WHERE "
                            "a.is_automatic AND a.kind = %s AND a.chain = o.chain AND a.order_onchain_id = o.onchain_id "
                            "AND a.status IN ('proposed', 'approved', 'signed', 'sent'))",
                            [chain, status, overdue_since, kind])
                count, oldest = cur.fetchone()
                if count:
                    overdue.append(f"{count} {status} order(s) past the {column.replace('_', ' ')} (oldest "
                                   f"{oldest:%Y-%m-%d %H:%M} UTC) still waiting for {kind}")
        if overdue:
            raise_alert(key=f"timeouts-overdue:{chain}", severity="P2", source="check_contract_actions",
                        title=f"{chain}: order timeouts overdue", message="; ".join(overdue) + ". Runbook §5: check "
                        "the check-seller/buyer-timeouts schedules, the actions worker and the keeper's gas; the "
                        "rejected timeout actions say why (Contract actions, filter automatic).")
            raised.append(f"timeouts-overdue:{chain}")
    return raised


def _unpaused_since(chain: str, when: datetime) -> bool:
    """Whether the escrow was unpaused after `when` (its Unpaused event, through the owner events' index)."""
    from chain.models import ChainEvent

    return ChainEvent.objects.owner_events(chain).filter(event="Unpaused", block_time__gt=when).exists()


# Which action kind sets which owner setting, and the parameters it would carry for a value.
SETTING_ACTIONS = {
    "treasury": ("set_treasury", lambda v: {"treasury": v}),
    "platform_fee_bps": ("set_platform_fee", lambda v: {"bps": v}),
    "arbitrator_fee_bps": ("set_arbitrator_fee", lambda v: {"bps": v}),
    "timeouts": ("set_timeouts", lambda v: dict(zip(("seller_timeout", "buyer_timeout", "dispute_timeout"), v))),
}


def _settings_changed_outside(chain: str, before: dict, now: dict, since: datetime | None) -> list[str]:
    """Each change from `before` to `now` (same escrow) that no sent or confirmed back-office action explains
    (same kind, same value, sent since a day before the last check: it may have waited in the mempool across
    that check). A token the back office learns of (from its event, as the sync catches up) counts only if the
    owner set it after the last check's block."""
    changes = []  # (message, kind, params)
    for key, value in now.items():
        if key in ("escrow", "block") or key not in before or before[key] == value:
            continue  # the record's own fields, a setting recorded since an upgrade, or no change
        if key == "tokens":
            set_after = _tokens_set_after(chain, before.get("block") or 0)
            for token, supported in value.items():
                if before[key].get(token, None if token in set_after else supported) != supported:
                    changes.append((f"token {token} {'now' if supported else 'no longer'} supported",
                                    "set_supported_token", {"token": token, "supported": supported}))
        elif key in SETTING_ACTIONS:
            kind, params = SETTING_ACTIONS[key][0], SETTING_ACTIONS[key][1](value)
            changes.append((f"{key}: {before[key]} → {value}", kind, params))
        else:
            changes.append((f"{key}: {before[key]} → {value}", "", {}))
    if not changes:
        return []
    from .models import ActionStatus, ContractAction

    made = ContractAction.objects.filter(chain=chain, status__in=[ActionStatus.SENT, ActionStatus.CONFIRMED],
                                         kind__in={kind for _, kind, _ in changes if kind})
    if since is not None:
        made = made.filter(sent_at__gte=since - timedelta(days=1))
    done = list(made.values_list("kind", "params"))
    return [message for message, kind, params in changes if (kind, params) not in done]


def _tokens_set_after(chain: str, block: int) -> set[str]:
    """The tokens whose SupportedTokenSet the owner emitted after `block` (its few events, through their index)."""
    from chain.models import ChainEvent

    rows = ChainEvent.objects.owner_events(chain).filter(event="SupportedTokenSet", block_number__gt=block)
    return {str(args.get("token", "")).lower() for args in rows.values_list("args", flat=True)}


def check_custody() -> list[str]:
    """Who owns the contracts, compared with the last check: a Safe's owners, threshold, guardians, modules, guard
    or fallback handler changed (the back office never changes them) or a new owner is a P1; so is, at every
    check, a module or guard the back office does not know; a relayer or keeper low on gas is a P2."""
    from .selectors import custody_status

    raised = []
    for chain in configured_chains():
        status = custody_status(chain)
        if status.error or status.custody is None:
            continue
        c = status.custody
        snapshot = {"owner": c.owner, "pool_owner": c.pool_owner, "is_safe": c.is_safe,
                    "owners": sorted(c.safe.owners) if c.safe else [], "threshold": c.safe.threshold if c.safe else None,
                    "guardians": sorted(c.guardian.guardians) if c.guardian else [],
                    "module_enabled": c.guardian.enabled if c.guardian else None,
                    "modules": sorted(c.safe.modules) if c.safe else [], "guard": c.safe.guard if c.safe else None,
                    "fallback_handler": c.safe.fallback_handler if c.safe else None}
        with transaction.atomic():
            state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
            before, state.custody_snapshot, state.custody_checked_at = state.custody_snapshot, snapshot, timezone.now()
            state.save(update_fields=["custody_snapshot", "custody_checked_at"])
        # The first check records; a key the last snapshot did not hold yet (added since an upgrade) is no change.
        changes = [f"{k}: {before[k]} → {snapshot[k]}" for k in snapshot if k in (before or {}) and before[k] != snapshot[k]]
        if changes:
            raise_alert(key=f"custody-changed:{chain}", severity="P1", source="check_custody",
                        title=f"{chain}: contract custody changed outside the back office",
                        message="; ".join(changes) + ". Check with every Safe owner that this was intended.")
            raised.append(f"custody-changed:{chain}")
        if c.safe:
            raised += _closed_but_executable(chain, c.safe)
        if c.errors:  # one alert naming every problem: one per problem under one key would keep only the last
            raise_alert(key=f"custody-mismatch:{chain}", severity="P1", source="check_custody",
                        title=f"{chain}: custody does not match the configuration", message=". ".join(c.errors) + ".")
            raised.append(f"custody-mismatch:{chain}")
        for gas in status.gas:
            if gas.low:
                raise_alert(key=f"gas-low:{chain}:{gas.role}", severity="P2", source="check_custody",
                            title=f"{chain}: the {gas.role} is low on gas",
                            message=(f"{gas.address} holds {gas.balance} (minimum {get_chain_config(chain).min_gas_balance})"
                                     if gas.address else gas.error) + f": top it up, or {gas.role} transactions stop.")
                raised.append(f"gas-low:{chain}:{gas.role}")
    return raised


def _closed_but_executable(chain: str, safe: SafeState) -> list[str]:
    """A P2, once per SafeTx, for a closed SafeTx (rejected, or failed without using its nonce) on the Safe's
    current nonce whose actions together hold the threshold of current owners' signatures: closing it in the back
    office did not void them (and the same SafeTx proposed, signed and rejected twice holds both halves), so
    whoever holds them can execute it until the nonce is used. Not while the same SafeTx is open again."""
    from .selectors import exposed_safe_txs, safe_tx_signers

    raised = []
    by_hash: dict[str, list] = {}
    for action in exposed_safe_txs().filter(chain=chain, safe_address=safe.address, safe_nonce=safe.nonce).order_by("pk"):
        by_hash.setdefault(action.signing_hash, []).append(action)
    for signing_hash, closed in by_hash.items():
        held = safe_tx_signers(signing_hash) & set(safe.owners)
        key = f"safe-tx-executable:{chain}:{signing_hash}"
        if len(held) < safe.threshold or Alert.objects.filter(key=key).exists():
            continue
        latest, names = closed[-1], ", ".join(f"#{a.pk}" for a in closed)
        then = ("Execute the action wanted on that nonce first, or its signers must accept that it uses the nonce up"
                if latest.kind == "cancel_safe_tx" else f"Open #{latest.pk} and use “Cancel on chain…”")
        raise_alert(key=key, severity="P2", source="check_custody",
                    title=f"{chain}: closed SafeTx {names} can still execute on chain",
                    message=f"{latest.description} on Safe nonce {safe.nonce}: {names} hold {len(held)} current owners' "
                            f"signatures of {safe.threshold} needed, and whoever holds them can execute it. {then}.")
        raised.append(key)
    return raised


def check_large_orders(window: timedelta = timedelta(hours=1)) -> int:
    """Alert table: a single order over 5,000 USDT (P3, information), once per order; in a USD stablecoin
    (USD_STABLECOINS), the only tokens whose amount is a dollar amount."""
    from .selectors import large_order_rule

    rule, params = large_order_rule()
    limit = params[0]
    with connection.cursor() as cur:
        cur.execute(f"SELECT chain, onchain_id, amount, token_symbol FROM orders WHERE created_at > %s AND {rule} "
                    "ORDER BY created_at LIMIT 100", [timezone.now() - window, *params])
        rows = cur.fetchall()
    for chain, onchain_id, amount, symbol in rows:
        raise_alert(key=f"large-order:{chain}:{onchain_id}", severity="P3", source="check_large_orders",
                    title=f"Large order {chain} #{onchain_id}: {amount.normalize():f} {symbol}",
                    message=f"Over the {limit} threshold.")
    return len(rows)


def check_secret_rotations() -> list[str]:
    raised = []
    for secret in SecretSchedule.objects.all():
        state = secret.state
        if state == "overdue":
            raise_alert(key=f"secret-overdue:{secret.name}", severity="P2", source="check_secret_rotations",
                        title=f"Secret rotation overdue: {secret.name}",
                        message=f"Due {secret.next_due:%Y-%m-%d}; procedure {secret.procedure}.")
            raised.append(secret.name)
        elif state == "due":
            raise_alert(key=f"secret-due:{secret.name}", severity="P3", source="check_secret_rotations",
                        title=f"Secret rotation due soon: {secret.name}",
                        message=f"Due {secret.next_due:%Y-%m-%d}; procedure {secret.procedure}.")
            raised.append(secret.name)
    return raised


def recalculate_user_tiers() -> int:
    """Runbook §5 update-user-tiers (daily 03:00 UTC): tier from 90 days of completed volume and disputes.

    gold: ≥ 50 completed and ≥ 10,000 volume and no lost dispute; silver: ≥ 10 completed;
    bronze: ≥ 1 completed; new otherwise. One statement; only changed rows are written.
    """
    with connection.cursor() as cur:
        cur.execute("""
            WITH activity AS (
                SELECT wallet, SUM(done) AS done, SUM(volume) AS volume, SUM(lost) AS lost FROM (
                    SELECT seller_wallet AS wallet, COUNT(*) FILTER (WHERE status = 'completed') AS done,
                           COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume,
                           COUNT(*) FILTER (WHERE status = 'resolved_buyer') AS lost
                    FROM orders WHERE created_at > NOW() - INTERVAL '90 days' GROUP BY seller_wallet
                    UNION ALL
                    SELECT buyer_wallet, COUNT(*) FILTER (WHERE status = 'completed'),
                           COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0),
                           COUNT(*) FILTER (WHERE status = 'resolved_seller')
                    FROM orders WHERE created_at > NOW() - INTERVAL '90 days' GROUP BY buyer_wallet) t
                GROUP BY wallet),
            tiers AS (
                SELECT p.wallet, CASE
                    WHEN a.done >= 50 AND a.volume >= 10000 AND a.lost = 0 THEN 'gold'
                    WHEN a.done >= 10 THEN 'silver'
                    WHEN a.done >= 1 THEN 'bronze'
                    ELSE 'new' END AS tier
                FROM user_profiles p LEFT JOIN activity a ON a.wallet = p.wallet)
            UPDATE user_profiles p SET tier = t.tier FROM tiers t
            WHERE p.wallet = t.wallet AND p.tier IS DISTINCT FROM t.tier""")
        return cur.rowcount

