"""The beat schedule in the admin (django-celery-beat's models), audited: staff enable, disable and retime entries.

The stock admins write without an audit row, and their changelist actions update in bulk. These replace them:
every save writes a before/after audit row in its transaction (AuditedConfigAdmin), the actions call a service
per entry, and what the code defines (schedules.py, written by `manage.py register_schedules`: the entry's name,
the task it runs, its arguments, its queue and routing, its description) is shown, not editable. Entries are
registered by that command, not added here; nothing is deleted (a schedule's delete would take its entries).
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django_celery_beat import admin as beat_admin
from django_celery_beat.models import ClockedSchedule, CrontabSchedule, IntervalSchedule, PeriodicTask, SolarSchedule

from backoffice.admin_utils import AuditedConfigAdmin

from . import services

CODE_FIELDS = ("name", "task", "args", "kwargs", "queue", "exchange", "routing_key", "priority", "headers",
               "description")


EDITABLE = ("enabled", "interval", "crontab", "solar", "clocked", "one_off", "start_time", "expires", "expire_seconds")


class PeriodicTaskForm(forms.ModelForm):
    """Whether and when an entry runs: the stock form's task chooser is for a field that is read-only here."""

    class Meta:
        model = PeriodicTask
        fields = EDITABLE

    def clean(self):
        data = super().clean()
        if data.get("expire_seconds") is not None and data.get("expires"):
            raise ValidationError({"expire_seconds": "Set an expiry time or expire seconds, not both: clear one."})
        return data


class PeriodicTaskAdmin(AuditedConfigAdmin, beat_admin.PeriodicTaskAdmin):
    form = PeriodicTaskForm
    change_form_template = None  # Django's own: the stock template's inline script is refused by the CSP anyway
    actions = ("enable_tasks", "disable_tasks")
    fieldsets = (
        (None, {"fields": ("name", "enabled", "description")}),
        ("Schedule", {"fields": ("interval", "crontab", "crontab_translation", "solar", "clocked", "one_off",
                                 "start_time", "expires", "expire_seconds", "last_run_at")}),
        ("What it runs (code: ops/monitoring/schedules.py, written by manage.py register_schedules)", {
            "fields": ("task", "args", "kwargs", "queue", "exchange", "routing_key", "priority", "headers")}),
    )
    readonly_fields = (*CODE_FIELDS, "crontab_translation", "last_run_at")

    def has_add_permission(self, request) -> bool:
        return False  # entries are registered by `manage.py register_schedules`, from the code

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        # Skips the stock view's crontab table, which only its template used.
        return admin.ModelAdmin.changeform_view(self, request, object_id, form_url, extra_context)

    @admin.display(description="crontab in words")
    def crontab_translation(self, obj: PeriodicTask) -> str:
        return obj.crontab.human_readable if obj.crontab_id else "—"

    @admin.action(description="Enable selected tasks", permissions=["change"])
    def enable_tasks(self, request, queryset):
        self._set_enabled(request, queryset, enabled=True)

    @admin.action(description="Disable selected tasks", permissions=["change"])
    def disable_tasks(self, request, queryset):
        self._set_enabled(request, queryset, enabled=False)

    def _set_enabled(self, request, queryset, *, enabled: bool) -> None:
        """One service call (one audit row) per entry, not one UPDATE for all of them."""
        changed = unchanged = 0
        for task in queryset.order_by("name"):
            try:
                done = services.set_periodic_task_enabled(actor=request.user, task=task, enabled=enabled,
                                                          reason="admin action on the selected tasks")
            except (PermissionDenied, ValidationError) as exc:
                self.message_user(request, f"{task.name}: {' '.join(getattr(exc, 'messages', [str(exc)]))}",
                                  messages.ERROR)
                continue
            changed, unchanged = changed + done, unchanged + (not done)
        verb = "enabled" if enabled else "disabled"
        self.message_user(request, f"{changed} task(s) {verb}" + (f"; {unchanged} already were" if unchanged else "")
                          + ".")


class AuditedScheduleAdmin(AuditedConfigAdmin):
    """An interval, crontab, solar or clocked schedule: an edit retimes every entry that uses it, which the page
    and the audit row name (instead of the stock inline, whose forms a save would have to carry)."""

    inlines = ()

    @admin.display(description="used by")
    def used_by(self, obj) -> str:
        return ", ".join(self._entries(obj)) or "no periodic task"

    def audit_reason(self, obj) -> str:
        entries = self._entries(obj)
        return f"retimes {', '.join(entries)}" if entries else "used by no periodic task"

    @staticmethod
    def _entries(obj) -> list[str]:
        if obj.pk is None:
            return []
        return list(obj.periodictask_set.order_by("name").values_list("name", flat=True))


class IntervalScheduleAdmin(AuditedScheduleAdmin, beat_admin.IntervalScheduleAdmin):
    readonly_fields = ("used_by",)


class CrontabScheduleAdmin(AuditedScheduleAdmin, beat_admin.CrontabScheduleAdmin):
    fields = (*beat_admin.CrontabScheduleAdmin.fields, "used_by")
    readonly_fields = (*beat_admin.CrontabScheduleAdmin.readonly_fields, "used_by")


class ClockedScheduleAdmin(AuditedScheduleAdmin, beat_admin.ClockedScheduleAdmin):
    fields = (*beat_admin.ClockedScheduleAdmin.fields, "used_by")
    readonly_fields = ("used_by",)


class SolarScheduleAdmin(AuditedScheduleAdmin, beat_admin.SolarScheduleAdmin):
    readonly_fields = ("used_by",)


for model, model_admin in ((PeriodicTask, PeriodicTaskAdmin), (IntervalSchedule, IntervalScheduleAdmin),
                           (CrontabSchedule, CrontabScheduleAdmin), (ClockedSchedule, ClockedScheduleAdmin),
                           (SolarSchedule, SolarScheduleAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
