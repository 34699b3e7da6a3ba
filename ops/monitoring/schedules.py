"""The beat schedule, as code. `manage.py register_schedules` writes it to django-celery-beat by name.

Staff may enable, disable or retime an entry in the admin; re-registering keeps those edits
(only missing entries are created) unless --reset is given. The entries of a chain taken out of CHAINS are
disabled, not deleted, and enabled again if it comes back.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from backoffice.queues import queue_for


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    every_seconds: float | None = None
    crontab: dict[str, str] | None = None  # minute, hour, day_of_week, day_of_month, month_of_year
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def max_gap_seconds(self) -> float:
        return max_gap_seconds(self.every_seconds, self.crontab)

    @property
    def queue(self) -> str:
        """The entry's queue, as the task router would choose it (the beat entry carries it visibly too)."""
        return queue_for(self.task, self.kwargs.get("chain")) or "celery"


def max_gap_seconds(every_seconds: float | None, crontab: dict[str, str] | None) -> float:
    """The longest an enabled entry may go without a run: its interval, or its crontab's period."""
    if every_seconds:
        return float(every_seconds)
    cron = crontab or {}
    if cron.get("day_of_month", "*") != "*" or cron.get("month_of_year", "*") != "*":
        return 31 * 86_400.0
    if cron.get("day_of_week", "*") != "*":
        return 7 * 86_400.0
    return 86_400.0 if cron.get("hour", "*") != "*" else 3_600.0


def stored_max_gap_seconds(task: Any) -> float | None:
    """The same for a django-celery-beat PeriodicTask as staff may have retimed it; None for another kind."""
    if task.interval_id:
        return task.interval.every * {"days": 86_400, "hours": 3_600, "minutes": 60, "seconds": 1,
                                       "microseconds": 1e-6}[task.interval.period]
    if task.crontab_id:
        c = task.crontab
        return max_gap_seconds(None, {"minute": c.minute, "hour": c.hour, "day_of_week": c.day_of_week,
                                      "day_of_month": c.day_of_month, "month_of_year": c.month_of_year})
    return None


def schedules() -> list[Schedule]:
    """Every periodic task of the back office (runbook §5), by stable name."""
    items: list[Schedule] = []
    for chain, cfg in settings.CHAINS.items():
        short = cfg["short"]  # the runbook's names: poll-bsc-events, poll-eth-events
        items.append(Schedule(
            name=f"poll-{short}-events", task="chain.tasks.sync_chain", every_seconds=cfg["poll_seconds"],
            kwargs={"chain": chain}, description=f"Runbook §5: event sync for {cfg['name']}."))
        items.append(Schedule(
            name=f"reconcile-{short}-orders", task="chain.tasks.reconcile_orders", every_seconds=600,
            kwargs={"chain": chain, "sample": 200},
            description=f"Compare 200 mirrored {cfg['name']} orders with the contract; alert on drift."))
    items += [
        Schedule(name="check-seller-timeouts", task="ops.tasks.check_seller_timeouts", every_seconds=60,
                 description="Runbook §5: autoExpireOrder for funded orders past the seller deadline."),
        Schedule(name="check-buyer-timeouts", task="ops.tasks.check_buyer_timeouts", every_seconds=60,
                 description="Runbook §5: autoReleaseToSeller for delivered orders past the buyer deadline."),
        Schedule(name="advance-contract-actions", task="ops.tasks.advance_contract_actions", every_seconds=15,
                 description="Broadcast recorded transactions, confirm receipts, recover after a crash."),
        Schedule(name="verify-audit-chain", task="ops.tasks.verify_audit_chain",
                 crontab={"minute": "30", "hour": "2", "day_of_week": "*", "day_of_month": "*",
                          "month_of_year": "*"},
                 description="Nightly: recompute the audit log's hash chain; alert on the first broken row."),
        Schedule(name="lift-expired-blacklist", task="disputes.tasks.lift_expired_blacklist_entries",
                 every_seconds=300, description="Lift blacklist entries whose expiry has passed (audited)."),
        Schedule(name="flag-repeat-offenders", task="disputes.tasks.flag_repeat_offenders", every_seconds=3600,
                 description="RB-04: flag repeat offenders for review (never blacklists)."),
        Schedule(name="flag-fast-order-makers", task="disputes.tasks.flag_fast_order_makers", every_seconds=900,
                 description="Runbook 002: flag for review the wallets that created more than 10 orders in 2 h "
                             "(never blacklists)."),
        Schedule(name="check-dispute-rate", task="disputes.tasks.check_dispute_rate", every_seconds=900,
                 description="RB-04 trigger: alert when the 24 h dispute rate passes the threshold (20%)."),
        Schedule(name="daily-operations-check", task="ops.tasks.daily_operations_check",
                 crontab={"minute": "0", "hour": "8", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook §4 daily check at 08:00 UTC: stored report, sent to the alert channels."),
        Schedule(name="check-sync", task="ops.tasks.check_sync", every_seconds=60,
                 description="RB-03: cursor unchanged for 10 minutes (P1), lag over 100 blocks (P2)."),
        Schedule(name="check-contracts", task="ops.tasks.check_contracts", every_seconds=60,
                 description="Alert table: paused() == true (P0); escrow solvency against open orders; owner "
                             "settings changed outside the back office (P1)."),
        Schedule(name="check-custody", task="ops.tasks.check_custody", every_seconds=120,
                 description="Custody: Safe owners, threshold, guardians, modules or guard changed outside the back "
                             "office, or a module or guard nobody declared (P1); a closed SafeTx still executable, "
                             "relayer or keeper low on gas (P2)."),
        Schedule(name="check-contract-actions", task="ops.tasks.check_contract_actions", every_seconds=300,
                 description="Runbook §5: transactions not mined after ACTION_STUCK_SECONDS, order timeouts overdue "
                             "by TIMEOUT_OVERDUE_SECONDS (P2)."),
        Schedule(name="check-large-orders", task="ops.tasks.check_large_orders", every_seconds=300,
                 description="Alert table: a single order over 5,000 USDT (P3)."),
        Schedule(name="check-secret-rotations", task="ops.tasks.check_secret_rotations",
                 crontab={"minute": "0", "hour": "7", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook §11: secrets due or overdue for rotation."),
        Schedule(name="update-user-tiers", task="ops.tasks.recalculate_user_tiers",
                 crontab={"minute": "0", "hour": "3", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook §5: daily user tier recalculation, 03:00 UTC."),
        Schedule(name="refresh-top-sellers", task="chain.tasks.refresh_top_sellers", every_seconds=600,
                 description="Runbook §9: the dashboard's top sellers (30 days), one pass over the window."),
        Schedule(name="backup-database", task="ops.tasks.backup_database",
                 crontab={"minute": "0", "hour": "3", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook §5: daily pg_dump of the back office database at 03:00 UTC into BACKUP_DIR; "
                             "removes dumps older than BACKUP_RETENTION_DAYS (never the newest good one)."),
        Schedule(name="test-backup-restore", task="ops.tasks.test_backup_restore",
                 crontab={"minute": "0", "hour": "5", "day_of_week": "0", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook 001 §2, weekly (Sunday 05:00 UTC): restore the newest backup into a scratch "
                             "database and check checksum, migrations, row counts and the audit chain."),
        Schedule(name="check-pause-drills", task="ops.tasks.check_pause_drills",
                 crontab={"minute": "15", "hour": "7", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="RB-05 rehearsed: a P2 when a chain that pauses by itself has no passed drill in 30 "
                             "days."),
        Schedule(name="vacuum-database", task="ops.tasks.vacuum_database",
                 crontab={"minute": "0", "hour": "4", "day_of_week": "0", "day_of_month": "*", "month_of_year": "*"},
                 description="Runbook §5, weekly (Sunday 04:00 UTC): VACUUM (ANALYZE) of the database (vacuumdb -z); "
                             "a report in Ops reports."),
        Schedule(name="sweep-alert-deliveries", task="backoffice.alerts.tasks.sweep_alert_deliveries",
                 every_seconds=300, description="Retry alert deliveries whose task was lost."),
        Schedule(name="screen-new-wallets", task="disputes.tasks.screen_new_wallets", every_seconds=60,
                 description="Sanctions: screen wallets new to the mirror against the lists and the chains' oracles "
                             "(a sync that met some wakes it at once; this catches a lost wake-up)."),
        Schedule(name="refresh-sanctions-lists", task="disputes.tasks.refresh_sanctions_lists",
                 crontab={"minute": "30", "hour": "5", "day_of_week": "*", "day_of_month": "*", "month_of_year": "*"},
                 description="Sanctions, daily at 05:30 UTC: import each SANCTIONS_LIST_URL that changed and re-screen "
                             "every known wallet against its new entries (does nothing while the variable is unset)."),
    ]
    return items
