"""Database backups and their restore tests: what was dumped, how big, how long, and whether it restores whole."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q


class BackupStatus(models.TextChoices):
    RUNNING = "running", "Running"
    OK = "ok", "Good"
    FAILED = "failed", "Failed"


class BackupTrigger(models.TextChoices):
    SCHEDULE = "schedule", "Beat schedule (03:00 UTC)"
    COMMAND = "command", "manage.py backup_database"
    BENCH = "bench", "Benchmark"


class BackupRunQuerySet(models.QuerySet):
    def good(self) -> BackupRunQuerySet:
        """Finished without error and its file still on disk (retention has not removed it)."""
        return self.filter(status=BackupStatus.OK, file_deleted_at__isnull=True)


class BackupRun(models.Model):
    """One `pg_dump -Fc` of the back office database into BACKUP_DIR."""

    started_at = models.DateTimeField(verbose_name="started (UTC)")
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name="finished (UTC)")
    status = models.CharField(max_length=8, choices=BackupStatus.choices, default=BackupStatus.RUNNING)
    trigger = models.CharField(max_length=8, choices=BackupTrigger.choices)
    actor_label = models.CharField(max_length=150, verbose_name="started by",
                                   help_text="The staff member, or system:<task> for the beat schedule.")
    file_path = models.CharField(max_length=500, blank=True, default="", verbose_name="file",
                                 help_text="Absolute path of the dump; written under a temporary name and renamed "
                                           "only once complete and fsynced.")
    size_bytes = models.BigIntegerField(null=True, blank=True, verbose_name="size (bytes)")
    sha256 = models.CharField(max_length=64, blank=True, default="", verbose_name="SHA-256",
                              help_text="Of the file as written; the restore test checks it first.")
    duration_seconds = models.FloatField(null=True, blank=True, verbose_name="duration (s)")
    row_counts = models.JSONField(default=dict, blank=True,
                                  help_text="Rows of the key tables in the dump's own snapshot "
                                            "(orders, audit_log, contract actions, blacklist).")
    schema_version = models.JSONField(default=dict, blank=True,
                                      help_text="The latest applied migration of each app at backup time.")
    pg_dump_version = models.CharField(max_length=100, blank=True, default="")
    error = models.TextField(blank=True, default="", help_text="Why the run failed and how to fix it.")
    file_deleted_at = models.DateTimeField(null=True, blank=True, verbose_name="file removed (UTC)",
                                           help_text="When retention (BACKUP_RETENTION_DAYS) removed the file.")

    objects = BackupRunQuerySet.as_manager()

    class Meta:
        db_table = "ops_backup_runs"
        ordering = ["-started_at", "-id"]
        verbose_name = "backup"
        permissions = [("download_backuprun", "Can download a database backup file"),
                       ("test_backuprun", "Can start a restore test of a backup")]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="ok") | (Q(sha256__regex=r"^[0-9a-f]{64}$") & Q(size_bytes__gt=0)
                                            & Q(finished_at__isnull=False) & ~Q(file_path="")),
                name="backup_runs_good_is_complete",
                violation_error_message="A good backup needs its file, size, SHA-256 and finish time."),
            models.CheckConstraint(condition=~Q(status="failed") | ~Q(error=""), name="backup_runs_failed_says_why",
                                   violation_error_message="A failed backup must say why."),
        ]

    def __str__(self) -> str:
        return f"backup #{self.pk} {self.started_at:%Y-%m-%d %H:%M} UTC ({self.get_status_display()})"


class RestoreTestStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"


class RestoreTest(models.Model):
    """Restoring one backup into a scratch database and checking that what comes back is whole."""

    backup = models.ForeignKey(BackupRun, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="restore_tests")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="Empty for the weekly schedule and the command.")
    actor_label = models.CharField(max_length=150, verbose_name="started by")
    created_at = models.DateTimeField(verbose_name="requested (UTC)")
    started_at = models.DateTimeField(null=True, blank=True, verbose_name="started (UTC)")
    finished_at = models.DateTimeField(null=True, blank=True, verbose_name="finished (UTC)")
    status = models.CharField(max_length=8, choices=RestoreTestStatus.choices, default=RestoreTestStatus.QUEUED)
    duration_seconds = models.FloatField(null=True, blank=True, verbose_name="duration (s)")
    checks = models.JSONField(default=list, blank=True,
                              help_text="Each check in order: name, ok, seconds, detail.")
    scratch_database = models.CharField(max_length=63, blank=True, default="",
                                        help_text="The throw-away database restored into (dropped afterwards).")
    error = models.TextField(blank=True, default="", help_text="The first failed check, its cause and the fix.")

    class Meta:
        db_table = "ops_restore_tests"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=~Q(status="failed") | ~Q(error=""), name="restore_tests_failed_says_why",
                                   violation_error_message="A failed restore test must say why."),
            models.CheckConstraint(condition=~Q(status="passed") | (Q(backup__isnull=False)
                                                                    & Q(finished_at__isnull=False)),
                                   name="restore_tests_passed_is_complete",
                                   violation_error_message="A passed restore test names the backup it restored "
                                                           "and when it finished."),
        ]

    def __str__(self) -> str:
        return f"restore test #{self.pk} {self.created_at:%Y-%m-%d %H:%M} UTC ({self.get_status_display()})"
