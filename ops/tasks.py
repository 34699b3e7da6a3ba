"""Celery tasks of the operations console: thin wrappers around one service each, safe to run twice."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from . import actions, audit, services, timeouts


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
    verdict = audit.verify_audit_chain()
    if not verdict.ok:
        services.raise_alert(key="audit-chain", severity="P1", source="verify_audit_chain",
                             title=f"audit_log chain broken at row {verdict.first_broken_id}",
                             message=verdict.problem)
    return {"ok": verdict.ok, "rows": verdict.rows_checked, "first_broken_id": verdict.first_broken_id}
