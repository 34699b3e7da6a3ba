"""Celery tasks of the owner actions: the recovery step and the timeout keeper, thin and safe to run twice. Their
names stay ops.tasks.* (beat's tables and the queue routes hold them).
"""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from . import advance, timeouts


@shared_task(name="ops.tasks.advance_contract_actions", ignore_result=True)
def advance_contract_actions() -> dict:
    """Recovery and confirmation of signed/sent contract actions."""
    close_old_connections()
    return advance.advance_contract_actions()


@shared_task(name="ops.tasks.check_seller_timeouts", ignore_result=True)
def check_seller_timeouts() -> dict:
    close_old_connections()
    return timeouts.submit_due_timeouts(kind="auto_expire")


@shared_task(name="ops.tasks.check_buyer_timeouts", ignore_result=True)
def check_buyer_timeouts() -> dict:
    close_old_connections()
    return timeouts.submit_due_timeouts(kind="auto_release")
