"""The beat schedule in the admin: every change staff make to an entry or a schedule (enable, disable, retime by
interval, crontab or clocked time) writes a before/after audit row in its own transaction; what the code defines
(the task, its arguments, its queue) is shown, never edited; entries are neither added nor deleted there."""
from __future__ import annotations

import io
from datetime import datetime
from datetime import timezone as dt_timezone
from html.parser import HTMLParser

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.urls import reverse
from django_celery_beat.models import ClockedSchedule, PeriodicTask

from backoffice.audit.models import AuditLog

pytestmark = pytest.mark.django_db


class _ChangeForm(HTMLParser):
    """The fields of an admin change form as a browser submits them (checked boxes, selected options, text)."""

    def __init__(self, form_id: str):
        super().__init__()
        self.form_id, self.inside, self.data = form_id, False, {}
        self._select = self._textarea = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == self.form_id:
            self.inside = True
        if not self.inside or not a.get("name") and tag != "option":
            return
        if tag == "input" and a.get("type", "text") not in ("submit", "button", "file"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.data[a["name"]] = a.get("value") or ("on" if a.get("type") == "checkbox" else "")
        elif tag == "select":
            self._select = a["name"]
            self.data.setdefault(self._select, "")
        elif tag == "option" and self._select and "selected" in a:
            self.data[self._select] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self.data[self._textarea] = ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data.removeprefix("\n") if not self.data[self._textarea] else data


def change_form(client, obj) -> tuple[str, dict]:
    """GET the object's change page: (its URL, the form's fields as they stand)."""
    url = reverse(f"admin:django_celery_beat_{obj._meta.model_name}_change", args=[obj.pk])
    page = client.get(url)
    assert page.status_code == 200
    parser = _ChangeForm(f"{obj._meta.model_name}_form")
    parser.feed(page.content.decode())
    return url, parser.data


def save(client, obj, **changes) -> None:
    """Change fields on the object's change page and save it, as staff do (None unticks a box)."""
    url, data = change_form(client, obj)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response


def audit_rows(obj) -> list[AuditLog]:
    return list(AuditLog.objects.filter(object_type=obj._meta.label_lower, object_id=str(obj.pk)).order_by("id"))


@pytest.fixture
def entries():
    call_command("register_schedules", stdout=io.StringIO())
    return {t.name: t for t in PeriodicTask.objects.select_related("interval", "crontab")}


@pytest.fixture
def ops_admin(client, django_user_model):
    user = django_user_model.objects.create_user("ops-admin", is_staff=True)
    user.groups.set([Group.objects.get(name="ops admin")])
    client.force_login(user)
    client.user = user
    return client


def test_schedule_admin_disabling_an_entry_writes_a_before_after_audit_row(ops_admin, entries):
    """Issue 22, finding 2: unticking Enabled on backup-database left no audit row."""
    backup = entries["backup-database"]

    save(ops_admin, backup, enabled=None)

    backup.refresh_from_db()
    assert backup.enabled is False
    [row] = audit_rows(backup)
    assert (row.action, row.actor, row.before, row.after) == (
        "change_periodictask", ops_admin.user, {"enabled": True}, {"enabled": False})
    assert row.object_repr.startswith("backup-database")


def test_schedule_admin_enabling_an_entry_again_is_audited(ops_admin, entries):
    custody = entries["check-custody"]
    PeriodicTask.objects.filter(pk=custody.pk).update(enabled=False)

    save(ops_admin, custody, enabled="on")

    custody.refresh_from_db()
    assert custody.enabled is True
    assert [(r.before, r.after) for r in audit_rows(custody)] == [({"enabled": False}, {"enabled": True})]


def test_schedule_admin_actions_enable_and_disable_one_audited_entry_at_a_time(ops_admin, entries):
    chosen = [entries["check-custody"], entries["verify-audit-chain"]]
    changelist = reverse("admin:django_celery_beat_periodictask_changelist")

    def act(action: str):
        return ops_admin.post(changelist, {"action": action, "index": "0",
                                           helpers.ACTION_CHECKBOX_NAME: [t.pk for t in chosen]}, follow=True)

    assert "2 task(s) disabled." in act("disable_tasks").content.decode()
    assert not PeriodicTask.objects.filter(pk__in=[t.pk for t in chosen], enabled=True).exists()
    PeriodicTask.objects.filter(pk=chosen[0].pk).update(enabled=True)  # one of them is on again meanwhile
    assert "1 task(s) enabled; 1 already were." in act("enable_tasks").content.decode()

    assert [(r.before, r.after, r.reason) for r in audit_rows(chosen[0])] == [
        ({"enabled": True}, {"enabled": False}, "admin action on the selected tasks")]
    assert [(r.before, r.after) for r in audit_rows(chosen[1])] == [
        ({"enabled": True}, {"enabled": False}), ({"enabled": False}, {"enabled": True})]
    # The stock bulk actions (a queryset.update() each, no audit) and "run" are not offered.
    page = ops_admin.get(changelist).content.decode()
    assert 'value="enable_tasks"' in page and 'value="disable_tasks"' in page
    assert 'value="toggle_tasks"' not in page and 'value="run_tasks"' not in page


def test_schedule_admin_retiming_an_entry_to_another_interval_is_audited(ops_admin, entries):
    poll, minute = entries["poll-bsc-events"], entries["check-seller-timeouts"].interval
    before = str(poll.interval)

    save(ops_admin, poll, interval=str(minute.pk))

    poll.refresh_from_db()
    assert poll.interval == minute
    [row] = audit_rows(poll)
    assert (row.before, row.after) == ({"interval": before}, {"interval": str(minute)})
    assert row.after == {"interval": "every 60 seconds"}


def test_schedule_admin_editing_an_interval_is_audited_naming_the_entries_it_retimes(staff_client, entries):
    interval = entries["check-seller-timeouts"].interval
    users = sorted(PeriodicTask.objects.filter(interval=interval).values_list("name", flat=True))

    save(staff_client, interval, every="120")

    interval.refresh_from_db()
    assert interval.every == 120
    [row] = audit_rows(interval)
    assert (row.action, row.before, row.after) == ("change_intervalschedule", {"every": 60}, {"every": 120})
    assert row.reason == f"retimes {', '.join(users)}" and "check-seller-timeouts" in row.reason


def test_schedule_admin_editing_a_crontab_is_audited(staff_client, entries):
    crontab = entries["backup-database"].crontab
    old_hour = crontab.hour

    save(staff_client, crontab, hour="4")

    crontab.refresh_from_db()
    assert crontab.hour == "4"
    [row] = audit_rows(crontab)
    assert (row.action, row.before, row.after) == ("change_crontabschedule", {"hour": old_hour}, {"hour": "4"})
    assert "backup-database" in row.reason


def test_schedule_admin_a_clocked_schedule_added_used_and_moved_is_audited(staff_client, entries):
    add = reverse("admin:django_celery_beat_clockedschedule_add")
    response = staff_client.post(add, {"clocked_time_0": "2031-01-02", "clocked_time_1": "03:04:05"})
    assert response.status_code == 302
    clocked = ClockedSchedule.objects.get()
    [added] = audit_rows(clocked)
    assert added.action == "add_clockedschedule" and added.before is None
    assert added.after == {"clocked_time": "2031-01-02T03:04:05Z"}

    report = entries["daily-operations-check"]
    crontab = str(report.crontab)
    save(staff_client, report, crontab="", clocked=str(clocked.pk), one_off="on")
    report.refresh_from_db()
    assert report.clocked == clocked and report.crontab is None
    [row] = audit_rows(report)
    assert row.before == {"crontab": crontab, "clocked": None, "one_off": False}
    assert row.after == {"crontab": None, "clocked": str(clocked), "one_off": True}

    save(staff_client, clocked, clocked_time_1="06:00:00")
    clocked.refresh_from_db()
    assert clocked.clocked_time == datetime(2031, 1, 2, 6, tzinfo=dt_timezone.utc)
    moved = audit_rows(clocked)[-1]
    assert (moved.action, moved.reason) == ("change_clockedschedule", "retimes daily-operations-check")
    assert moved.before == {"clocked_time": "2031-01-02T03:04:05Z"}
    assert moved.after == {"clocked_time": "2031-01-02T06:00:00Z"}


def test_schedule_admin_shows_the_task_its_arguments_and_queue_but_never_edits_them(ops_admin, entries):
    poll = entries["poll-bsc-events"]
    url, data = change_form(ops_admin, poll)
    assert not {"name", "task", "regtask", "args", "kwargs", "queue", "exchange", "routing_key", "headers",
                "description"} & set(data)
    page = ops_admin.get(url).content.decode()
    assert "chain.tasks.sync_chain" in page and "sync.bsc" in page

    forged = {**data, "task": "ops.tasks.backup_database", "args": '["x"]', "kwargs": '{"chain": "evil"}',
              "queue": "celery", "name": "renamed", "enabled": "on"}
    assert ops_admin.post(url, forged).status_code == 302

    stored = PeriodicTask.objects.get(pk=poll.pk)
    assert (stored.name, stored.task, stored.args, stored.kwargs, stored.queue) == (
        poll.name, poll.task, poll.args, poll.kwargs, poll.queue)
    assert not audit_rows(poll)  # nothing that may be edited changed


def test_schedule_admin_adds_and_deletes_no_entry_nor_schedule(ops_admin, staff_client, entries):
    backup = entries["backup-database"]
    for client in (ops_admin, staff_client):
        assert client.get(reverse("admin:django_celery_beat_periodictask_add")).status_code == 403
        assert client.post(reverse("admin:django_celery_beat_periodictask_delete", args=[backup.pk]),
                           {"post": "yes"}).status_code == 403
    assert staff_client.post(reverse("admin:django_celery_beat_crontabschedule_delete", args=[backup.crontab.pk]),
                             {"post": "yes"}).status_code == 403
    assert PeriodicTask.objects.filter(pk=backup.pk).exists()


def test_schedule_admin_change_and_its_audit_row_commit_together(ops_admin, entries, monkeypatch):
    """A change whose audit row cannot be written is not made (the row is written in the save's transaction)."""
    import backoffice.admin_utils

    def fail(**kwargs):
        raise RuntimeError("the audit log is unavailable")

    custody = entries["check-custody"]
    monkeypatch.setattr(backoffice.admin_utils, "record_audit", fail)
    with pytest.raises(RuntimeError):
        save(ops_admin, custody, enabled=None)

    assert PeriodicTask.objects.get(pk=custody.pk).enabled is True


def test_schedule_admin_saving_an_entry_unchanged_writes_no_audit_row(ops_admin, entries):
    backup = entries["backup-database"]
    page = ops_admin.get(reverse("admin:django_celery_beat_periodictask_change", args=[backup.pk])).content.decode()
    assert "Crontab in words" in page and "At 03:00 AM" in page

    save(ops_admin, backup)

    assert not audit_rows(backup)
