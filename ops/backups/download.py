"""Downloads: `record_backup_download` checks that an ops admin may take a dump away, and audits it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm

from ..models import BackupRun, BackupStatus


def record_backup_download(*, actor: Any, backup: BackupRun) -> Path:
    """An ops admin downloads a dump: checked and audited (a dump holds every record of the marketplace)."""
    require_perm(actor, "ops.download_backuprun", "download a database backup", allow_system=False)
    if backup.status != BackupStatus.OK or backup.file_deleted_at is not None:
        raise ValidationError(f"{backup} has no file to download: only good backups within retention have one.")
    path = Path(backup.file_path)
    if not path.is_file():
        raise ValidationError(f"The file {path} of {backup} is missing on disk: run a restore test to confirm, "
                              f"and take a new backup.")
    with transaction.atomic():
        record_audit(actor=actor, action="download_backup", obj=backup, after={"file": str(path)})
    return path
