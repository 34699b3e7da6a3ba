"""Retention: `prune_backups` removes old dumps, never the newest good one nor the last one proven to restore."""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backoffice.audit.services import record_audit

from ..models import BackupRun, RestoreTest, RestoreTestStatus


def prune_backups(*, actor: Any, now: datetime | None = None) -> list[int]:
    """Remove the files of good backups older than BACKUP_RETENTION_DAYS (audited). Never removed: the newest good
    one, and the backup of the newest passed restore test with every good one after it (while newer backups fail
    their restore tests, the last one proven to restore must stay).

    The row stays, with `file_deleted_at`: the history of backups is kept, only the dumps go.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.BACKUP_RETENTION_DAYS)
    newest = BackupRun.objects.good().order_by("-finished_at", "-id").values_list("pk", flat=True).first()
    candidates = BackupRun.objects.good().filter(finished_at__lt=cutoff).exclude(pk=newest)
    proven = (RestoreTest.objects.filter(status=RestoreTestStatus.PASSED).order_by("-finished_at", "-id")
              .select_related("backup").first())
    if proven is not None:
        candidates = candidates.filter(finished_at__lt=proven.backup.finished_at).exclude(pk=proven.backup_id)
    removed = []
    for run in candidates.order_by("id"):
        with transaction.atomic():
            BackupRun.objects.filter(pk=run.pk).update(file_deleted_at=now)
            record_audit(actor=actor, action="remove_backup_file", obj=run, after={"file": run.file_path},
                         reason=f"older than BACKUP_RETENTION_DAYS ({settings.BACKUP_RETENTION_DAYS})")
            # Inside the transaction: a file that cannot be removed leaves its row as it was.
            Path(run.file_path).unlink(missing_ok=True)
        removed.append(run.pk)
    return removed
