"""Reads for the Backups page, the dashboard and the checks: the age of the last good backup and restore test."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from backoffice.durations import age, human_duration

from ..models import (
    BackupRun,
    BackupStatus,
    RestoreTest,
    RestoreTestStatus,
)

# The alert rules' thresholds (ops/prometheus/alerts.yml): a daily backup, a weekly restore test, each with slack.
BACKUP_MAX_AGE = timedelta(hours=26)


RESTORE_TEST_MAX_AGE = timedelta(days=8)


@dataclass
class BackupHealth:
    last_backup: BackupRun | None
    last_restore_test: RestoreTest | None
    backup_age: timedelta | None
    restore_test_age: timedelta | None

    @property
    def backup_stale(self) -> bool:
        return self.backup_age is None or self.backup_age > BACKUP_MAX_AGE

    @property
    def restore_test_stale(self) -> bool:
        return self.restore_test_age is None or self.restore_test_age > RESTORE_TEST_MAX_AGE


def backup_health(now: datetime | None = None) -> BackupHealth:
    """The last good backup and the last passed restore test, with their ages (two index-free reads of small tables)."""
    now = now or timezone.now()
    backup = BackupRun.objects.filter(status=BackupStatus.OK).order_by("-finished_at").first()
    test = (RestoreTest.objects.filter(status=RestoreTestStatus.PASSED).select_related("backup")
            .order_by("-finished_at").first())
    return BackupHealth(backup, test, age(backup.finished_at, now) if backup else None,
                        age(test.finished_at, now) if test else None)


def age_text(elapsed: timedelta | None) -> str:
    """'12 min ago' / '5 h 3 min ago' / '3 d 2 h ago' / 'never'."""
    return "never" if elapsed is None else f"{human_duration(elapsed.total_seconds())} ago"
