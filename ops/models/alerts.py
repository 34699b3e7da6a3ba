"""Alerts raised by the back office's own checks."""
from __future__ import annotations

from django.conf import settings
from django.db import models


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
    last_sent_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Last time an occurrence went to the channels (repeats are quiet).")
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
