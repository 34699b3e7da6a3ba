"""Admin of the operations console: daily reports, platform flags,
secret rotation, incidents (timeline, lifecycle, post-mortem, monthly report)."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from backoffice.admin_utils import (
    AuditedConfigAdmin,
    ReadOnlyAdminMixin,
    admin_page,
    errors_to_form,
)
from backoffice.db_router import ReplicaChangelistMixin
from backoffice.security import stepup_required
from ops.models import (
    Incident,
    IncidentStatus,
    OpsReport,
    PlatformFlag,
    RotationReason,
    SecretRotation,
    SecretSchedule,
)

from . import selectors, services


@admin.register(OpsReport)
class OpsReportAdmin(ReplicaChangelistMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = ("No report yet: the daily operations check runs at 08:00 UTC (runbook §4). To run it now: "
                     "Periodic tasks → daily-operations-check → Run selected tasks.")
    list_display = ("kind", "created_at", "status")
    list_filter = ("kind", "status")
    show_full_result_count = False  # one count, not two
    readonly_fields = ("kind", "created_at", "status", "report")
    fields = ("kind", "created_at", "status", "report")

    @admin.display(description="report")
    def report(self, obj: OpsReport) -> str:
        return format_html("<pre>{}</pre>", obj.text)

    def get_urls(self):
        return [path("database/", self.admin_site.admin_view(self.database_view), name="ops_opsreport_database"),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        can = request.user.has_perm("ops.view_database_activity")
        return super().changelist_view(request, {**(extra_context or {}), "database_link": can})

    @stepup_required(methods=("POST",))
    def database_view(self, request):
        """RB-02 on this back office's database: connections by state, the longest queries, and (ops admins, with
        a reason and a fresh code) ending the connections idle for over 10 minutes."""
        if not request.user.has_perm("ops.view_database_activity"):
            raise PermissionDenied
        form = EndIdleForm(request.POST or None)
        if request.method == "POST":
            if not request.user.has_perm("ops.terminate_idle_connections"):
                raise PermissionDenied
            if form.is_valid():
                try:
                    ended = services.terminate_idle_connections(actor=request.user, reason=form.cleaned_data["reason"],
                                                                pids=form.cleaned_data["pids"])
                except ValidationError as exc:
                    errors_to_form(form, exc)
                else:
                    self.message_user(request, f"Ended {len(ended)} idle connection(s)"
                                               f"{': ' + ', '.join(map(str, ended)) if ended else ''}.",
                                      messages.SUCCESS)
                    return HttpResponseRedirect(reverse("admin:ops_opsreport_database"))
        activity = selectors.database_activity()
        used = sum(n for _, n in activity.by_state)
        if request.method != "POST" or form.is_valid():
            form = EndIdleForm(initial={"pids": ",".join(str(c["pid"]) for c in activity.idle_long)})
        return admin_page(self, request, "admin/ops/opsreport/database.html", title="Database connections (RB-02)",
                          activity=activity, used=used, form=form,
                          can_end=request.user.has_perm("ops.terminate_idle_connections"))


class EndIdleForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Required; written to the audit log with the connections ended.")
    pids = forms.CharField(widget=forms.HiddenInput, required=False)  # the connections the page showed

    def clean_pids(self) -> list[int]:
        try:
            return [int(p) for p in self.cleaned_data["pids"].split(",") if p.strip()]
        except ValueError:
            raise forms.ValidationError("Reload the page: the list of connections is not valid.") from None


class FlagForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Required; audited.")
    value = forms.JSONField(help_text='JSON: true / false / a number, e.g. 5000.')

    class Meta:
        model = PlatformFlag
        fields = ("value",)

    def clean_value(self):
        value = self.cleaned_data["value"]
        problem = services.flag_value_problem(self.instance, value) if self.instance.pk else ""
        if problem:
            raise forms.ValidationError(problem)
        return value


@admin.register(PlatformFlag)
class PlatformFlagAdmin(admin.ModelAdmin):
    list_display = ("key", "value", "description", "updated_at", "updated_by")
    list_select_related = ("updated_by",)
    form = FlagForm

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change):
        if obj.key == "TRADES_ENABLED" and form.cleaned_data["value"] is True and "value" in form.changed_data:
            # Turning trading back on goes through the resume path (four eyes), not a form (saving it while it
            # is on, e.g. to reword its description, is no turning on).
            raise PermissionDenied("Use Contract actions → Resume to turn trading back on.")
        services.set_platform_flag(actor=request.user, key=obj.key, value=form.cleaned_data["value"],
                                  reason=form.cleaned_data["reason"])


class RotationForm(forms.Form):
    reason = forms.ChoiceField(choices=RotationReason.choices)
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                           help_text="Required for a suspected compromise.")
    steps_confirmed = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, required=False,
                                                label="runbook steps done")
    new_value = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                                help_text="Optional. Only a 12-digit SHA-256 fingerprint is kept, never the value.")

    def __init__(self, *args, steps=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["steps_confirmed"].choices = [(s, s) for s in steps]


@admin.register(SecretSchedule)
class SecretScheduleAdmin(AuditedConfigAdmin):
    list_display = ("name", "state_display", "interval_days", "last_rotated_at", "next_due", "procedure",
                    "record_link")
    fields = ("name", "interval_days", "warn_days", "procedure", "impact", "steps", "last_rotated_at")
    readonly_fields = ("name", "last_rotated_at")

    def has_add_permission(self, request) -> bool:
        return request.user.has_perm("ops.add_secretschedule")

    @admin.display(description="state")
    def state_display(self, obj: SecretSchedule) -> str:
        colour = {"overdue": "#ba2121", "due": "#b26b00"}.get(obj.state)
        return format_html('<strong style="color:{}">{}</strong>', colour, obj.state) if colour else obj.state

    @admin.display(description="")
    def record_link(self, obj: SecretSchedule) -> str:
        return format_html('<a href="{}">Record rotation…</a>',
                           reverse("admin:ops_secretschedule_rotate", args=[obj.pk]))

    def get_urls(self):
        return [path("<int:pk>/rotate/", self.admin_site.admin_view(self.rotate_view),
                     name="ops_secretschedule_rotate"), *super().get_urls()]

    @stepup_required
    def rotate_view(self, request, pk: int):
        if not request.user.has_perm("ops.add_secretrotation"):
            raise PermissionDenied
        secret = get_object_or_404(SecretSchedule, pk=pk)
        form = RotationForm(request.POST or None, steps=secret.steps)
        if request.method == "POST" and form.is_valid():
            try:
                rotation = services.record_secret_rotation(actor=request.user, secret=secret, **form.cleaned_data)
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                noted = " (fingerprint " + rotation.fingerprint + ")" if rotation.fingerprint else ""
                self.message_user(request, f"Rotation of {secret.name} recorded{noted}; "
                                           f"next due {secret.__class__.objects.get(pk=pk).next_due or 'as needed'}.")
                return HttpResponseRedirect(reverse("admin:ops_secretschedule_changelist"))
        return admin_page(self, request, "admin/ops/secret_rotate.html", title=f"Record rotation: {secret.name}",
                          secret=secret, form=form, history=secret.rotations.select_related("rotated_by")[:20])


@admin.register(SecretRotation)
class SecretRotationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = "No rotation recorded yet: record one from Secret schedules → Record rotation… (runbook RB-06)."
    list_display = ("secret", "rotated_at", "rotated_by", "reason", "fingerprint")
    list_filter = ("secret", "reason")
    list_select_related = ("secret", "rotated_by")


class IncidentOpenForm(forms.Form):
    title = forms.CharField(max_length=200)
    severity = forms.ChoiceField(choices=[("P0", "P0 — funds at risk"), ("P1", "P1 — service down"),
                                          ("P2", "P2 — degraded / fraud"), ("P3", "P3 — minor")])
    started_at = forms.DateTimeField(required=False, help_text="First sign of the issue, UTC (default: now).")
    runbook = forms.CharField(required=False, max_length=32, help_text="e.g. RB-05")
    summary = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))


class IncidentUpdateForm(forms.Form):
    op = forms.ChoiceField(choices=[("event", "add a timeline entry"), ("triaged", "triaged"),
                                    ("mitigated", "mitigated"), ("resolved", "resolved"),
                                    ("postmortem", "post-mortem")])
    text = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    commander = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_staff=True), required=False)
    ops_lead = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_staff=True), required=False)
    comms_lead = forms.ModelChoiceField(queryset=get_user_model().objects.filter(is_staff=True), required=False)
    severity = forms.ChoiceField(choices=[("", "—"), ("P0", "P0"), ("P1", "P1"), ("P2", "P2"), ("P3", "P3")],
                                 required=False)


@admin.register(Incident)
class IncidentAdmin(admin.ModelAdmin):
    empty_message = ("No incident recorded. Open one when users or funds are affected (runbook §7): it keeps the "
                     "timeline and drafts the post-mortem.")
    list_display = ("title", "severity", "status", "commander", "detected_at", "resolved_at", "postmortem_state")
    list_filter = ("severity", "status", ("detected_at", admin.DateFieldListFilter))
    list_select_related = ("commander",)
    search_fields = ("title",)
    filter_horizontal = ("contract_actions",)
    raw_id_fields = ("affected_orders", "alerts")
    change_form_template = "admin/ops/incident/change_form.html"
    fields = ("title", "runbook", "summary", "affected_orders", "contract_actions", "alerts")

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="post-mortem")
    def postmortem_state(self, obj: Incident) -> str:
        if obj.postmortem_done_at:
            return "done"
        if obj.postmortem_due_at:
            late = obj.postmortem_due_at < timezone.now()
            return format_html('<span style="color:{}">due {}</span>', "#ba2121" if late else "inherit",
                               obj.postmortem_due_at.strftime("%Y-%m-%d %H:%M"))
        return "—"

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("open/", wrap(self.open_view), name="ops_incident_open"),
                path("<int:pk>/update/", wrap(self.update_view), name="ops_incident_update"),
                path("report/", wrap(self.report_view), name="ops_incident_report"),
                *super().get_urls()]

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:ops_incident_open"))

    def save_model(self, request, obj, form, change):
        # The change form's links (orders, actions, alerts) are saved next, in the same transaction (the admin's).
        services.save_incident_details(actor=request.user, incident=obj,
                                      changed={f: str(form.cleaned_data.get(f)) for f in form.changed_data})

    def open_view(self, request):
        if not request.user.has_perm("ops.add_incident"):
            raise PermissionDenied
        form = IncidentOpenForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                incident = services.open_incident(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                return HttpResponseRedirect(reverse("admin:ops_incident_change", args=[incident.pk]))
        return admin_page(self, request, "admin/ops/simple_form.html", title="Open an incident", form=form,
                          submit="Open incident")

    def change_view(self, request, object_id, form_url="", extra_context=None):
        incident = get_object_or_404(Incident, pk=object_id)
        return super().change_view(request, object_id, form_url, {
            **(extra_context or {}), "incident": incident, "timeline": incident.timeline.select_related("author"),
            "update_form": IncidentUpdateForm(
                initial={"text": incident.postmortem} if incident.status == "resolved" else None)})

    def update_view(self, request, pk: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not request.user.has_perm("ops.change_incident"):
            raise PermissionDenied
        incident = get_object_or_404(Incident, pk=pk)
        form = IncidentUpdateForm(request.POST)
        try:
            if not form.is_valid():
                raise ValidationError(form.errors.as_text())
            op, text = form.cleaned_data["op"], form.cleaned_data["text"]
            if op == "event":
                services.add_incident_event(actor=request.user, incident=incident, text=text)
            elif op == "postmortem":
                services.complete_postmortem(actor=request.user, incident=incident, text=text)
            else:
                services.advance_incident(actor=request.user, incident=incident, to=op, note=text,
                                         commander=form.cleaned_data["commander"],
                                         ops_lead=form.cleaned_data["ops_lead"],
                                         comms_lead=form.cleaned_data["comms_lead"],
                                         severity=form.cleaned_data["severity"] or None)
            self.message_user(request, "Incident updated.")
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        return HttpResponseRedirect(reverse("admin:ops_incident_change", args=[pk]))

    def report_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = timezone.now()
        try:
            year = int(request.GET.get("year", now.year))
            month = int(request.GET.get("month", now.month))
            if not 1 <= month <= 12 or not 2000 <= year <= 2100:
                raise ValueError
        except ValueError:
            self.message_user(request, "year and month must be numbers, e.g. ?year=2026&month=11.", messages.ERROR)
            year, month = now.year, now.month
        return admin_page(self, request, "admin/ops/incident/report.html", title=f"Incidents {year}-{month:02d}",
                          report=services.monthly_incident_report(year, month), year=year, month=month,
                          statuses=IncidentStatus)
