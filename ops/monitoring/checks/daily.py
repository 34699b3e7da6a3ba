"""The daily operations check (runbook §4) and the weekly VACUUM (ANALYZE) (runbook §5)."""
from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.db import DatabaseError, connection
from django.db.models import Count
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.alerts.selectors import precision_by_rule
from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.durations import age
from chain.models import EventSyncCursor
from ops.backups.selectors import BACKUP_MAX_AGE, RESTORE_TEST_MAX_AGE, age_text, backup_health
from ops.models import OpsReport

from .. import health as health_checks

logger = logging.getLogger(__name__)


def _one(sql: str, params=None) -> dict:
    with connection.cursor() as cur:
        cur.execute(sql, params or [])
        names = [c.name for c in cur.description]
        return dict(zip(names, cur.fetchone(), strict=True))


def _growth_per_day(size_bytes: int) -> float | None:
    """The database's growth in bytes per day, from the oldest daily check of the last eight days to now."""
    since = timezone.now() - timedelta(days=8)
    first = (OpsReport.objects.filter(kind="daily_check", created_at__gte=since, data__has_key="database_bytes")
             .order_by("created_at").first())
    if first is None:
        return None
    days = (timezone.now() - first.created_at).total_seconds() / 86_400
    return (size_bytes - int(first.data["database_bytes"])) / days if days >= 0.5 else None


def _seconds(age: timedelta | None) -> int | None:
    return None if age is None else int(age.total_seconds())


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
    else:  # a vacuum that ran clears the last failed one
        settle_alerts(source="vacuum_database", scope=["vacuum-failed"], raised=[])
    return report


def daily_operations_check() -> OpsReport:
    """Runbook §4 as a stored report, sent to the alert channels (P3, information)."""
    checks = health_checks.run_checks()
    status = health_checks.overall(checks)
    stats = _one(
        "SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE status = 'completed') AS completed, "
        "COUNT(*) FILTER (WHERE status = 'disputed') AS disputed, "
        "COUNT(*) FILTER (WHERE status = 'cancelled') AS cancelled, "
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
    firing = Alert.objects.firing().count()
    precision = [r for r in precision_by_rule() if r.precision is not None or r.fired]
    data = {"health": status, "checks": checks, "orders_24h": {k: str(v) for k, v in stats.items()},
            "alerts_24h": raised_24h, "alerts_open": still_open, "alerts_firing": firing,
            "precision_30d": {r.rule: {"fired": r.fired, "resolved_by_itself": r.resolved_by_itself,
                                       "true": r.marked_true, "false": r.marked_false, "test": r.marked_test,
                                       "precision": r.precision,
                                       "median_ack_s": r.median_to_acknowledge.total_seconds()
                                       if r.median_to_acknowledge else None} for r in precision},
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
                                            "last week (runbook: growth rate × months to 80%)"
                                            if growth is not None else ""),
             f"6. Redis memory: {data['redis_memory_mb']} MB",
             f"7. Celery workers: {data['celery_workers']}",
             f"8. Backups: {backup_line}",
             f"9. Alerts 24 h: {sum(raised_24h.values())} raised"
             + (f" ({', '.join(f'{k} {v}' for k, v in raised_24h.items())})" if raised_24h else "")
             + f"; {firing} firing, {still_open} not acknowledged",
             "10. Precision 30 days (fired / cleared by itself / true / false / precision / median to acknowledge): "
             + ("; ".join(f"{r.rule} {r.fired}/{r.resolved_by_itself}/{r.marked_true}/{r.marked_false}/"
                          f"{r.precision_text}/{r.median_text}" for r in precision[:12]) or "no alert")]
    report = OpsReport.objects.create(kind="daily_check", status=status, data=data, text="\n".join(lines))
    key = f"daily-check:{timezone.now():%Y-%m-%d}"
    raise_alert(key=key, severity="P3", source="daily_check", title=f"Daily operations check: {status}",
                message=report.text)
    settle_alerts(source="daily_check", scope=["daily-check"], raised=[key])  # yesterday's report is superseded
    return report
