"""The beat schedule as code: register_schedules creates every entry once, keeps staff retiming, follows moved tasks."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from ops.schedules import schedules

pytestmark = pytest.mark.django_db


def register(*args) -> str:
    out = io.StringIO()
    call_command("register_schedules", *args, stdout=out)
    return out.getvalue()


def test_register_schedules_creates_each_entry_once():
    register()
    register()
    assert PeriodicTask.objects.count() == len(schedules())
    assert set(PeriodicTask.objects.values_list("name", flat=True)) == {s.name for s in schedules()}


def test_register_schedules_keeps_staff_retiming_but_follows_a_moved_task():
    register()
    sweep = PeriodicTask.objects.get(name="sweep-alert-deliveries")
    staff_interval, _ = IntervalSchedule.objects.get_or_create(every=42, period=IntervalSchedule.SECONDS)
    # As registered before the alerts moved below the apps, and retimed by staff since.
    PeriodicTask.objects.filter(pk=sweep.pk).update(task="ops.tasks.sweep_alert_deliveries", interval=staff_interval,
                                                    enabled=False)
    assert "1 moved" in register()
    sweep.refresh_from_db()
    assert sweep.task == "backoffice.alerts.tasks.sweep_alert_deliveries"
    assert sweep.interval == staff_interval and sweep.enabled is False
