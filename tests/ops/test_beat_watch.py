"""Who watches the checks: every beat entry's last run, in /health, /metrics and its alert rules (promtool tests)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from ops.monitoring import health

pytestmark = pytest.mark.django_db


@pytest.fixture
def registered():
    call_command("register_schedules", verbosity=0)
    PeriodicTask.objects.update(last_run_at=timezone.now())


def test_beat_check_is_ok_while_every_entry_runs_on_time(registered):
    result = health.check_beat()
    assert result["status"] == "ok" and result["late"] == [] and result["schedules"] == len(health.schedule_runs())


def test_beat_check_names_entries_that_missed_their_period(registered):
    """A dead beat: the one-minute check has not run for half an hour; the daily backup's last run is fine."""
    PeriodicTask.objects.filter(name="check-contracts").update(last_run_at=timezone.now() - timedelta(minutes=30))
    PeriodicTask.objects.filter(name="backup-database").update(last_run_at=timezone.now() - timedelta(hours=20))
    result = health.check_beat()
    assert result["status"] == "warning" and result["late"] == ["check-contracts"]
    assert "check that celery beat is running" in result["problem"]


def test_beat_check_shows_a_disabled_entry_without_calling_it_late(registered):
    PeriodicTask.objects.filter(name="check-custody").update(enabled=False,
                                                             last_run_at=timezone.now() - timedelta(days=2))
    result = health.check_beat()
    assert result["status"] == "ok" and result["disabled"] == ["check-custody"]


def test_beat_check_names_entries_never_registered(db):
    result = health.check_beat()
    assert result["status"] == "warning" and "register_schedules" in result["problem"]


def test_metrics_export_each_entrys_last_run_late_and_enabled(registered, client, settings):
    from .test_metrics import TOKEN, scrape

    settings.METRICS_TOKEN = TOKEN
    PeriodicTask.objects.filter(name="check-contracts").update(last_run_at=timezone.now() - timedelta(minutes=30))
    m = scrape(client)
    assert m[("celery_beat_schedule_late", (("schedule", "check-contracts"),))] == 1
    assert m[("celery_beat_schedule_late", (("schedule", "check-custody"),))] == 0
    assert m[("celery_beat_schedule_enabled", (("schedule", "check-custody"),))] == 1
    assert m[("celery_beat_schedule_seconds_since_run", (("schedule", "check-contracts"),))] >= 1800


def test_beat_check_measures_an_entry_by_its_period_as_staff_retimed_it(registered):
    from django_celery_beat.models import IntervalSchedule

    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period=IntervalSchedule.HOURS)
    PeriodicTask.objects.filter(name="check-large-orders").update(
        interval=hourly, last_run_at=timezone.now() - timedelta(minutes=50))
    assert health.check_beat()["late"] == [], "hourly now: fifty minutes is on time"


def test_beat_writes_what_it_sent_within_seconds_so_a_restart_after_downtime_reads_on_time(registered, monkeypatch):
    """Beat was down for half an hour: the entries of a few minutes are late. Restarted, it sends them at once;
    within SYNC_SECONDS their runs are written and the check is ok again (django-celery-beat's own scheduler writes
    every 3 minutes: /health said "check that celery beat is running" that long after every such restart)."""
    import time

    from backoffice.beat import SYNC_SECONDS, Scheduler
    from backoffice.celery import app

    # Beat's own process closes its stale connections before writing; here that would be the test's transaction.
    monkeypatch.setattr("django_celery_beat.schedulers.close_old_connections", lambda: None)
    PeriodicTask.objects.update(last_run_at=timezone.now() - timedelta(minutes=30))
    late = health.check_beat()["late"]
    assert "check-contracts" in late and "poll-bsc-events" in late
    scheduler = Scheduler(app=app)
    due = [entry for entry in scheduler.schedule.values() if entry.is_due()[0]]
    assert set(late) <= {entry.name for entry in due}
    for entry in due:
        scheduler.reserve(entry)  # what sending it does to the entry (the message itself is not sent here)
    scheduler._last_sync = time.monotonic() - SYNC_SECONDS - 1  # its last write was just over SYNC_SECONDS ago
    assert scheduler.should_sync()
    scheduler.sync()
    result = health.check_beat()
    assert result["status"] == "ok" and result["late"] == [], result
