"""Celery tasks of the backups: the nightly pg_dump and the weekly restore test, thin and safe to run twice. Their
names stay ops.tasks.* (beat's tables hold them).
"""
from __future__ import annotations

from celery import shared_task
from django.core.exceptions import ValidationError
from django.db import close_old_connections

from .dump import run_backup
from .restore import run_restore_test


@shared_task(name="ops.tasks.backup_database", ignore_result=True)
def backup_database() -> dict:
    """03:00 UTC: one pg_dump into BACKUP_DIR (refused, not queued, while another runs)."""

    close_old_connections()
    try:
        run = run_backup(actor="system:backup_database")
    except ValidationError as exc:
        return {"refused": exc.messages}
    return {"backup": run.pk, "status": run.status}


@shared_task(name="ops.tasks.test_backup_restore", ignore_result=True)
def test_backup_restore(restore_test_id: int | None = None) -> dict:
    """Weekly (no id: the newest good backup), or a test an ops admin queued; running a finished one is a no-op."""

    close_old_connections()
    try:
        test = run_restore_test(actor="system:test_backup_restore", restore_test_id=restore_test_id)
    except ValidationError as exc:
        return {"refused": exc.messages}
    return {"restore_test": test.pk, "status": test.status}
