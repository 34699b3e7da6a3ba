"""Celery tasks of the scheduled checks and reports, thin and safe to run twice. Their names stay ops.tasks.* (beat's
tables and the queue routes hold them).
"""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.audit.selectors import verify_audit_chain as verify_chain

from . import drills
from .checks import actions as action_checks
from .checks import business, certain, contracts, custody, daily, sync


@shared_task(name="ops.tasks.verify_audit_chain", ignore_result=True)
def verify_audit_chain() -> dict:
    close_old_connections()
    verdict = verify_chain()
    if not verdict.ok:
        raise_alert(key="audit-chain", severity="P1", source="verify_audit_chain",
                    title=f"audit_log chain broken at row {verdict.first_broken_id}", message=verdict.problem)
    settle_alerts(source="verify_audit_chain", scope=["audit-chain"], raised=[] if verdict.ok else ["audit-chain"])
    return {"ok": verdict.ok, "rows": verdict.rows_checked, "first_broken_id": verdict.first_broken_id}


@shared_task(name="ops.tasks.daily_operations_check", ignore_result=True)
def daily_operations_check() -> int:
    close_old_connections()
    return daily.daily_operations_check().pk


@shared_task(name="ops.tasks.check_sync", ignore_result=True)
def check_sync() -> list:
    close_old_connections()
    return sync.check_sync()


@shared_task(name="ops.tasks.vacuum_database", ignore_result=True)
def vacuum_database() -> str:
    close_old_connections()
    return daily.vacuum_database().status


@shared_task(name="ops.tasks.check_contract_actions", ignore_result=True)
def check_contract_actions() -> list:
    close_old_connections()
    return action_checks.check_contract_actions()


@shared_task(name="ops.tasks.check_custody", ignore_result=True)
def check_custody() -> list:
    close_old_connections()
    return custody.check_custody()


@shared_task(name="ops.tasks.check_contracts", ignore_result=True)
def check_contracts() -> list:
    close_old_connections()
    return contracts.check_contracts()


@shared_task(name="ops.tasks.check_large_orders", ignore_result=True)
def check_large_orders() -> int:
    close_old_connections()
    return business.check_large_orders()


@shared_task(name="ops.tasks.check_secret_rotations", ignore_result=True)
def check_secret_rotations() -> list:
    close_old_connections()
    return business.check_secret_rotations()


@shared_task(name="ops.tasks.recalculate_user_tiers", ignore_result=True)
def recalculate_user_tiers() -> int:
    close_old_connections()
    return business.recalculate_user_tiers()


@shared_task(name="ops.tasks.check_chain_now", ignore_result=True)
def check_chain_now(chain: str) -> list:
    """After each sync that applied blocks (on the actions queue): the checks that can pause the chain."""
    close_old_connections()
    return certain.check_chain_now(chain=chain)


@shared_task(name="ops.tasks.run_pause_drill", ignore_result=True)
def run_pause_drill(chain: str, actor: str = "system:pause_drill") -> str:
    """An ops admin's "Run a pause drill" button (the label of who asked is the actor)."""
    close_old_connections()
    return drills.run_pause_drill(actor=actor, chain=chain).status


@shared_task(name="ops.tasks.check_pause_drills", ignore_result=True)
def check_pause_drills() -> list:
    close_old_connections()
    return drills.check_pause_drills()
