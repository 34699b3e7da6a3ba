"""Operations records: the append-only, hash-chained audit log."""
from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditLog(models.Model):
    """One state change made through a service: who, what, which object, before/after, why, when.

    Append-only: PostgreSQL triggers refuse UPDATE, DELETE and TRUNCATE. Each row carries the
    SHA-256 of the previous row (`prev_hash`) and of itself (`row_hash`), so an edit made with
    the triggers disabled is found by `verify_audit_chain`.
    """

    created_at = models.DateTimeField(help_text="When the change was committed (UTC).")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                              related_name="+", help_text="Staff user; empty for the system.")
    actor_label = models.CharField(max_length=150, help_text="Username, or system:<task> for automation.")
    action = models.CharField(max_length=64, db_index=True, help_text="Service name, e.g. blacklist_wallet.")
    object_type = models.CharField(max_length=64, blank=True)
    object_id = models.CharField(max_length=128, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64, help_text="row_hash of the previous row (64 zeros for the first).")
    row_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "audit_log"
        ordering = ["-id"]
        verbose_name = "audit record"
        indexes = [
            models.Index(fields=["created_at"], name="audit_log_created_idx"),
            models.Index(fields=["object_type", "object_id"], name="audit_log_object_idx"),
            models.Index(fields=["actor_label", "created_at"], name="audit_log_actor_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor_label}"


class AlertSeverity(models.TextChoices):
    P0 = "P0", "P0 — funds at risk"
    P1 = "P1", "P1 — service down"
    P2 = "P2", "P2 — degraded / fraud"
    P3 = "P3", "P3 — minor / info"


class Alert(models.Model):
    """An alert raised by the back office's own checks; repeats of an open alert only count up."""

    key = models.CharField(max_length=128, help_text="De-duplication key, e.g. reconciliation:bsc.")
    severity = models.CharField(max_length=2, choices=AlertSeverity.choices)
    title = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    source = models.CharField(max_length=64, help_text="The check that raised it.")
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    occurrences = models.PositiveIntegerField(default=1)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                        related_name="+")

    class Meta:
        db_table = "ops_alerts"
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(acknowledged_at__isnull=True),
                                    name="ops_alerts_one_open_per_key"),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"
