"""Celery tasks of the operations console: thin wrappers around one service each, safe to run twice."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from backoffice.alerts.services import raise_alert
from backoffice.audit.selectors import verify_audit_chain as verify_chain

from . import actions, timeouts


@shared_task(ignore_result=True)
def advance_contract_actions() -> dict:
    """Recovery and confirmation of signed/sent contract actions."""
    close_old_connections()
    return actions.advance_contract_actions()


@shared_task(ignore_result=True)
def check_seller_timeouts() -> dict:
    close_old_connections()
    return timeouts.submit_due_timeouts(kind="auto_expire")


@shared_task(ignore_result=True)
def check_buyer_timeouts() -> dict:
    close_old_connections()
    return timeouts.submit_due_timeouts(kind="auto_release")


@shared_task(ignore_result=True)
def verify_audit_chain() -> dict:
    close_old_connections()
    verdict = verify_chain()
    if not verdict.ok:
        raise_alert(key="audit-chain", severity="P1", source="verify_audit_chain",
                    title=f"audit_log chain broken at row {verdict.first_broken_id}", message=verdict.problem)
    return {"ok": verdict.ok, "rows": verdict.rows_checked, "first_broken_id": verdict.first_broken_id}


@shared_task(ignore_result=True)
def backup_database() -> dict:
    """03:00 UTC: one pg_dump into BACKUP_DIR (refused, not queued, while another runs)."""
    from django.core.exceptions import ValidationError

    from . import backups

    close_old_connections()
    try:
        run = backups.run_backup(actor="system:backup_database")
    except ValidationError as exc:
        return {"refused": exc.messages}
    return {"backup": run.pk, "status": run.status}


@shared_task(ignore_result=True)
def test_backup_restore(restore_test_id: int | None = None) -> dict:
    """Weekly (no id: the newest good backup), or a test an ops admin queued; running a finished one is a no-op."""
    from django.core.exceptions import ValidationError

    from . import backups

    close_old_connections()
    try:
        test = backups.run_restore_test(actor="system:test_backup_restore", restore_test_id=restore_test_id)
    except ValidationError as exc:
        return {"refused": exc.messages}
    return {"restore_test": test.pk, "status": test.status}


@shared_task(ignore_result=True)
def daily_operations_check() -> int:
    from . import checks

    close_old_connections()
    return checks.daily_operations_check().pk


@shared_task(ignore_result=True)
def check_sync() -> list:
    from . import checks

    close_old_connections()
    return checks.check_sync()


@shared_task(ignore_result=True)
def vacuum_database() -> str:
    from . import checks

    close_old_connections()
    return checks.vacuum_database().status


@shared_task(ignore_result=True)
def check_contract_actions() -> list:
    from . import checks

    close_old_connections()
    return checks.check_contract_actions()


@shared_task(ignore_result=True)
def check_custody() -> list:
    from . import checks

    close_old_connections()
    return checks.check_custody()


@shared_task(ignore_result=True)
def check_contracts() -> list:
    from . import checks

    close_old_connections()
    return checks.check_contracts()


@shared_task(ignore_result=True)
def check_large_orders() -> int:
    from . import checks

    close_old_connections()
    return checks.check_large_orders()


@shared_task(ignore_result=True)
def check_secret_rotations() -> list:
    from . import checks

    close_old_connections()
    return checks.check_secret_rotations()


@shared_task(ignore_result=True)
def recalculate_user_tiers() -> int:
    from . import checks

    close_old_connections()
    return checks.recalculate_user_tiers()
