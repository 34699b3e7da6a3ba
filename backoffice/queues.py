"""A Celery queue per job: each chain's sync on its own queue, contract actions on theirs, checks on another.

A chain that is catching up (or whose provider hangs) then only delays its own next poll, never
another chain's sync, an emergency pause or a timeout; production runs a worker per queue (README,
"Running in production"). Routing is code, read by Celery through CELERY_TASK_ROUTES and by
register_schedules for the beat entries.
"""
from __future__ import annotations

from django.conf import settings

ACTIONS = "actions"  # contract actions (broadcast, confirm) and the timeout keeper
CHECKS = "checks"  # health checks, reports, trust-and-safety sweeps, rollups
ALERTS = "alerts"  # alert deliveries: a notification never waits behind a daily report
DEFAULT = "celery"  # Celery's default: nothing is routed here, but a task without a route would land here

CHAIN_TASKS = {"chain.tasks.sync_chain", "chain.tasks.reconcile_orders"}
ROUTES = {
    "ops.tasks.advance_contract_actions": ACTIONS,
    "ops.tasks.check_seller_timeouts": ACTIONS,
    "ops.tasks.check_buyer_timeouts": ACTIONS,
    # The checks that may pause a chain run beside the contract actions: never behind a daily report.
    "ops.tasks.check_chain_now": ACTIONS,
    "backoffice.alerts.tasks.deliver_alert": ALERTS,
    "backoffice.alerts.tasks.sweep_alert_deliveries": ALERTS,
}
# Every other task of the back office's own apps is a check or a report.
CHECK_MODULES = ("ops.tasks.", "disputes.tasks.", "chain.tasks.", "backoffice.")


def sync_queue(chain: str) -> str:
    return f"sync.{chain}"


def queue_for(task: str, chain: str | None = None) -> str | None:
    """The queue of `task` (with its chain argument, for the per-chain tasks); None for a foreign task."""
    if task in CHAIN_TASKS and chain:
        return sync_queue(chain)
    if task in ROUTES:
        return ROUTES[task]
    if task.startswith(CHECK_MODULES):
        return CHECKS
    return None


def route_task(name, args, kwargs, options, task=None, **kw):
    """Celery router (CELERY_TASK_ROUTES): the chain is the first argument of the per-chain tasks."""
    chain = (kwargs or {}).get("chain") or ((args or [None])[0] if name in CHAIN_TASKS else None)
    queue = queue_for(name, chain if isinstance(chain, str) else None)
    return {"queue": queue} if queue else None


def all_queues() -> list[str]:
    """Every queue a complete set of workers consumes (make run's workers; /health and /metrics report each)."""
    return [sync_queue(chain) for chain in settings.CHAINS] + [ACTIONS, CHECKS, ALERTS, DEFAULT]
