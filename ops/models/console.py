"""The operations console: daily reports, secret rotation, incidents."""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from backoffice.alerts.models import Alert, AlertSeverity


class OpsReport(models.Model):
    """A stored scheduled report (the runbook §4 daily operations check)."""

    kind = models.CharField(max_length=32, default="daily_check")
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, help_text="ok / degraded / error, from the health check.")
    data = models.JSONField()
    text = models.TextField(help_text="The report as sent to the alert channels.")

    class Meta:
        db_table = "ops_reports"
        ordering = ["-created_at"]
        permissions = [("view_database_activity", "Can see the database's connections and running queries (RB-02)"),
                       ("terminate_idle_connections", "Can end idle database connections (RB-02)")]

    def __str__(self) -> str:
        return f"{self.kind} {self.created_at:%Y-%m-%d %H:%M}"


class SecretSchedule(models.Model):
    """A secret and how often it is rotated (runbook §11); rotations are recorded, never the values."""

    name = models.CharField(max_length=64, unique=True)
    interval_days = models.IntegerField(null=True, blank=True, help_text="Empty: rotated as needed (no schedule).")
    procedure = models.CharField(max_length=200, blank=True, default="", help_text="Runbook reference, e.g. RB-06.")
    impact = models.CharField(max_length=200, blank=True, default="")
    steps = models.JSONField(default=list, blank=True, help_text="The runbook steps to confirm when rotating.")
    last_rotated_at = models.DateTimeField(null=True, blank=True)
    warn_days = models.IntegerField(default=7, help_text="'Due' this many days before the due date.")

    class Meta:
        db_table = "ops_secret_schedules"
        ordering = ["name"]
        constraints = [models.CheckConstraint(condition=Q(interval_days__isnull=True) | Q(interval_days__gt=0),
                                              name="secret_schedules_interval_positive",
                                              violation_error_message="The interval must be at least one day.")]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def states(cls) -> list[str]:
        """Every schedule's `state`, reading only the columns it needs (the dashboard and /metrics count them)."""
        return [s.state for s in cls.objects.only("interval_days", "last_rotated_at", "warn_days")]

    @property
    def next_due(self):
        if self.interval_days is None:
            return None
        if self.last_rotated_at is None:
            return timezone.now()  # never recorded: due now
        return self.last_rotated_at + timedelta(days=self.interval_days)

    @property
    def state(self) -> str:
        due = self.next_due
        if due is None:
            return "as needed"
        now = timezone.now()
        if due <= now:
            return "overdue"
        if due - now <= timedelta(days=self.warn_days):
            return "due"
        return "ok"


class RotationReason(models.TextChoices):
    SCHEDULED = "scheduled", "Scheduled rotation"
    COMPROMISE = "compromise", "Suspected compromise"


class SecretRotation(models.Model):
    """One rotation: who, when, why, which steps were confirmed, and a short fingerprint of the new value."""

    secret = models.ForeignKey(SecretSchedule, on_delete=models.PROTECT, related_name="rotations")
    rotated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    rotated_at = models.DateTimeField(auto_now_add=True)
    reason = models.CharField(max_length=12, choices=RotationReason.choices)
    note = models.TextField(blank=True, default="")
    steps_confirmed = models.JSONField(default=list)
    fingerprint = models.CharField(max_length=16, blank=True, default="",
                                   help_text="First 12 hex digits of the SHA-256 of the new value, when given.")

    class Meta:
        db_table = "ops_secret_rotations"
        ordering = ["-rotated_at"]
        constraints = [models.CheckConstraint(condition=Q(fingerprint="") | Q(fingerprint__regex=r"^[0-9a-f]{12}$"),
                                              name="secret_rotations_fingerprint_shape")]

    def __str__(self) -> str:
        return f"{self.secret} rotated {self.rotated_at:%Y-%m-%d}"


class IncidentStatus(models.TextChoices):
    DETECTED = "detected", "Detected"
    TRIAGED = "triaged", "Triaged"
    MITIGATED = "mitigated", "Mitigated"
    RESOLVED = "resolved", "Resolved"
    POSTMORTEM = "postmortem", "Post-mortem done"


INCIDENT_FLOW = [IncidentStatus.DETECTED, IncidentStatus.TRIAGED, IncidentStatus.MITIGATED, IncidentStatus.RESOLVED,
                 IncidentStatus.POSTMORTEM]


class Incident(models.Model):
    """An incident (guide §7 and the incident playbook), from detection to post-mortem."""

    title = models.CharField(max_length=200)
    severity = models.CharField(max_length=2, choices=AlertSeverity.choices)
    status = models.CharField(max_length=12, choices=IncidentStatus.choices, default=IncidentStatus.DETECTED)
    summary = models.TextField(blank=True, default="")
    runbook = models.CharField(max_length=32, blank=True, default="", help_text="e.g. RB-05")
    commander = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+", verbose_name="incident commander")
    ops_lead = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", verbose_name="operations lead")
    comms_lead = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", verbose_name="communications lead")
    started_at = models.DateTimeField(help_text="First sign of the issue (for MTTD).")
    detected_at = models.DateTimeField()
    triaged_at = models.DateTimeField(null=True, blank=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    postmortem_due_at = models.DateTimeField(null=True, blank=True, help_text="48 h after a P0/P1 is resolved.")
    postmortem = models.TextField(blank=True, default="")
    postmortem_done_at = models.DateTimeField(null=True, blank=True)
    affected_orders = models.ManyToManyField("chain.Order", blank=True, related_name="incidents")
    contract_actions = models.ManyToManyField("ops.ContractAction", blank=True, related_name="incidents")
    alerts = models.ManyToManyField(Alert, blank=True, related_name="incidents")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="Empty: opened by the system (an automatic pause).")

    class Meta:
        db_table = "ops_incidents"
        ordering = ["-detected_at"]
        constraints = [
            models.CheckConstraint(condition=Q(detected_at__gte=models.F("started_at")),
                                   name="incidents_detect_after_start",
                                   violation_error_message="Detection cannot come before the first sign."),
            models.CheckConstraint(condition=Q(resolved_at__isnull=True) | Q(resolved_at__gte=models.F("detected_at")),
                                   name="incidents_resolve_after_detect",
                                   violation_error_message="Resolution cannot come before detection."),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"


class IncidentEvent(models.Model):
    """One line of an incident's timeline. Append-only (database trigger)."""

    incident = models.ForeignKey(Incident, on_delete=models.PROTECT, related_name="timeline")
    at = models.DateTimeField(help_text="When it happened (UTC).")
    text = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "ops_incident_events"
        ordering = ["at", "id"]
        constraints = [models.CheckConstraint(condition=~Q(text=""), name="incident_events_text_required")]

    def __str__(self) -> str:
        return f"{self.at:%H:%M} {self.text[:40]}"
