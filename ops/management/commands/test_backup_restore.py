"""test_backup_restore: restore the newest good backup into a scratch database and check it (as the weekly beat)."""
from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from ops.backups.services import run_restore_test
from ops.models import BackupRun, BackupStatus, RestoreTestStatus


class Command(BaseCommand):
    help = ("Restore a backup into a scratch database: SHA-256, pg_restore, migrate --check, row counts, audit chain "
            "and its triggers; the scratch database is dropped afterwards. Exits non-zero when a check fails.")

    def add_arguments(self, parser):
        parser.add_argument("--backup", type=int, help="The backup's id (default: the newest good one).")

    def handle(self, *args, backup: int | None = None, **options):
        chosen = None
        if backup is not None:
            chosen = BackupRun.objects.filter(pk=backup).first()
            if chosen is None:
                raise CommandError(f"--backup {backup}: no such backup; see the Backups page for the ids.")
            # Refused here, not failed as a test: a backup that never had a whole file is no news to page about.
            if chosen.status != BackupStatus.OK:
                raise CommandError(f"--backup {backup}: {chosen} has no dump to test ({chosen.error or 'not finished'})"
                                   f"; pick a good backup on the Backups page, or leave out --backup to test the "
                                   f"newest good one.")
            if chosen.file_deleted_at is not None:
                raise CommandError(f"--backup {backup}: its file was removed by retention on "
                                   f"{chosen.file_deleted_at:%Y-%m-%d %H:%M} UTC (BACKUP_RETENTION_DAYS); pick a newer "
                                   f"good backup, or leave out --backup to test the newest good one.")
        try:
            test = run_restore_test(actor="system:test_backup_restore command", backup=chosen)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        for check in test.checks:
            mark = "ok  " if check["ok"] else "FAIL"
            self.stdout.write(f"{mark} {check['name']:<22} {check['seconds']:>8.2f} s  {check['detail']}")
        if test.status != RestoreTestStatus.PASSED:
            raise CommandError(f"Restore test #{test.pk} failed: {test.error}")
        self.stdout.write(self.style.SUCCESS(f"Restore test #{test.pk} passed in {test.duration_seconds:.1f} s."))
