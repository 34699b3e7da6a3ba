"""The beat schedule as code: register_schedules creates every entry once, keeps staff retiming, follows moved tasks,
and disables (never deletes) the entries of a chain taken out of CHAINS."""
from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from backoffice.chain_settings import chains_from_env
from ops.monitoring.schedules import schedules

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


# The ops entries as a database held them before ops/ was split into rooms (tasks then lived in ops/tasks.py).
BEFORE_THE_ROOMS = {
    "advance-contract-actions": "ops.tasks.advance_contract_actions", "check-seller-timeouts":
    "ops.tasks.check_seller_timeouts", "check-buyer-timeouts": "ops.tasks.check_buyer_timeouts",
    "verify-audit-chain": "ops.tasks.verify_audit_chain", "daily-operations-check": "ops.tasks.daily_operations_check",
    "check-sync": "ops.tasks.check_sync", "check-contracts": "ops.tasks.check_contracts",
    "check-custody": "ops.tasks.check_custody", "check-contract-actions": "ops.tasks.check_contract_actions",
    "check-large-orders": "ops.tasks.check_large_orders", "check-secret-rotations": "ops.tasks.check_secret_rotations",
    "update-user-tiers": "ops.tasks.recalculate_user_tiers", "backup-database": "ops.tasks.backup_database",
    "test-backup-restore": "ops.tasks.test_backup_restore", "vacuum-database": "ops.tasks.vacuum_database",
}


def test_register_schedules_on_a_database_from_before_the_rooms_keeps_every_task_name_and_a_worker_has_them():
    """The split of ops/ into rooms kept the task names (beat's rows, queued messages and the queue routes hold
    them): a database written before it needs no change, and a worker (autodiscovery) registers every name."""
    from backoffice.celery import app

    register()
    staff_interval, _ = IntervalSchedule.objects.get_or_create(every=7, period=IntervalSchedule.MINUTES)
    for name, task in BEFORE_THE_ROOMS.items():
        PeriodicTask.objects.filter(name=name).update(task=task, interval=staff_interval, crontab=None)
    assert "0 moved" in register()
    stored = dict(PeriodicTask.objects.filter(name__in=BEFORE_THE_ROOMS).values_list("name", "task"))
    assert stored == BEFORE_THE_ROOMS
    assert set(PeriodicTask.objects.filter(name__in=BEFORE_THE_ROOMS).values_list("interval", flat=True)) == {
        staff_interval.pk}
    app.loader.import_default_modules()  # what a worker does at start: autodiscover every room's tasks
    missing = set(PeriodicTask.objects.values_list("task", flat=True)) - set(app.tasks)
    assert missing == set()


def set_chains(settings, value: str) -> None:
    settings.CHAINS = chains_from_env({"CHAINS": value}, production=False)


def test_register_schedules_disables_a_removed_chains_entries_keeping_their_timing(settings):
    register()
    staff_interval, _ = IntervalSchedule.objects.get_or_create(every=9, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="poll-bsc-events").update(interval=staff_interval)

    set_chains(settings, "ethereum,base")
    out = register()

    assert "2 disabled" in out
    assert "Disabled poll-bsc-events: chain 'bsc' is not in CHAINS (ethereum, base)" in out
    assert "Disabled reconcile-bsc-orders: chain 'bsc'" in out
    bsc = PeriodicTask.objects.get(name="poll-bsc-events")
    assert bsc.enabled is False and bsc.interval == staff_interval and bsc.queue == "sync.bsc"
    assert bsc.description.startswith("Disabled by register_schedules: chain 'bsc' is not in CHAINS.")
    assert PeriodicTask.objects.get(name="reconcile-bsc-orders").enabled is False
    assert PeriodicTask.objects.get(name="poll-base-events").enabled is True
    assert PeriodicTask.objects.get(name="poll-eth-events").enabled is True
    # Every other entry is left as it was, and a second run changes nothing.
    assert PeriodicTask.objects.filter(enabled=False).count() == 2
    assert "0 disabled" in register()


def test_register_schedules_enables_again_what_it_disabled_when_the_chain_is_back(settings):
    register()
    staff_interval, _ = IntervalSchedule.objects.get_or_create(every=9, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.filter(name="poll-bsc-events").update(interval=staff_interval)
    set_chains(settings, "ethereum")
    register()

    set_chains(settings, "bsc,ethereum")
    out = register()

    assert "2 enabled again" in out and "0 disabled" in out
    bsc = PeriodicTask.objects.get(name="poll-bsc-events")
    assert bsc.enabled is True and bsc.interval == staff_interval
    assert bsc.description == next(s.description for s in schedules() if s.name == "poll-bsc-events")
    assert not PeriodicTask.objects.filter(enabled=False).exists()


def test_register_schedules_leaves_staff_disabling_and_staff_entries_alone(settings):
    register()
    # Staff disabled BSC's reconciliation themselves, and keep an entry of their own for BSC.
    PeriodicTask.objects.filter(name="reconcile-bsc-orders").update(enabled=False)
    PeriodicTask.objects.create(name="bsc-extra-sync", task="chain.tasks.sync_chain", kwargs='{"chain": "bsc"}',
                                interval=PeriodicTask.objects.get(name="poll-bsc-events").interval)
    set_chains(settings, "ethereum")
    assert "1 disabled" in register()  # poll-bsc-events only

    set_chains(settings, "bsc,ethereum")
    assert "1 enabled again" in register()
    assert PeriodicTask.objects.get(name="poll-bsc-events").enabled is True
    assert PeriodicTask.objects.get(name="reconcile-bsc-orders").enabled is False  # as staff left it
    assert PeriodicTask.objects.get(name="bsc-extra-sync").enabled is True
