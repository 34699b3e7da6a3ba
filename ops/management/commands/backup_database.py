"""backup_database: pg_dump the back office database into BACKUP_DIR and record the run (as the 03:00 UTC beat)."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ops.backups.services import run_backup
from ops.models import BackupStatus, BackupTrigger


class Command(BaseCommand):
    help = "Dump the database (pg_dump -Fc) into BACKUP_DIR, record checksum, size and row counts; apply retention."

    def handle(self, *args, **options):
        try:
            run = run_backup(actor="system:backup_database command", trigger=BackupTrigger.COMMAND)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        if run.status != BackupStatus.OK:
            raise CommandError(f"Backup #{run.pk} failed: {run.error}")
        counts = ", ".join(f"{k} {v:,}" for k, v in run.row_counts.items())
        self.stdout.write(self.style.SUCCESS(
            f"Backup #{run.pk}: {run.file_path} ({run.size_bytes / 1e6:.1f} MB, {run.duration_seconds:.1f} s), "
            f"SHA-256 {run.sha256}; {counts}."))
