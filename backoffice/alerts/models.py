"""Alerts raised by the back office's own checks, the channels they go to, and each delivery."""
from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class AlertSeverity(models.TextChoices):
    P0 = "P0", "P0 — funds at risk"
    P1 = "P1", "P1 — service down"
    P2 = "P2", "P2 — degraded / fraud"
    P3 = "P3", "P3 — minor / info"


class Verdict(models.TextChoices):
    """What staff say an alert was, when they acknowledge it: the alerts' precision is counted from these."""
    TRUE = "true", "True alarm"
    FALSE = "false", "False alarm"
    TEST = "test", "Test or drill"


class AlertQuerySet(models.QuerySet):
    def firing(self):
        return self.filter(resolved_at__isnull=True)

    def resolved(self):
        return self.filter(resolved_at__isnull=False)

    def unacknowledged(self):
        return self.filter(acknowledged_at__isnull=True)


class Alert(models.Model):
    """An alert raised by the back office's own checks: *firing* until the check that raised it sees the condition
    clear (then *resolved*, by the system), and, separately, *acknowledged* by a person with a verdict. Repeats of a
    firing alert only count up; once resolved, the condition coming back is a new alert."""
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
    verdict = models.CharField(max_length=5, choices=Verdict.choices, blank=True, default="",
                               help_text="True alarm, false alarm or test, given when acknowledged.")
    resolved_at = models.DateTimeField(null=True, blank=True,
                                       help_text="When the condition cleared (the system resolves; empty: firing).")
    resolution = models.CharField(max_length=300, blank=True, default="",
                                  help_text="How it resolved: the check that saw it clear, or staff closing it.")
    clean_runs = models.PositiveIntegerField(default=0,
                                             help_text="Runs of its check in a row that found the condition clear.")
    flapping = models.BooleanField(default=False,
                                   help_text="Fired and resolved too often in the last hour: not re-sent until it "
                                             "settles.")
    inhibited = models.CharField(max_length=200, blank=True, default="",
                                 help_text="Why it is not sent: a cause already paging (e.g. the chain is paused).")

    objects = AlertQuerySet.as_manager()

    class Meta:
        db_table = "ops_alerts"
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(fields=["key"], condition=models.Q(resolved_at__isnull=True),
                                    name="ops_alerts_one_firing_per_key"),
            models.CheckConstraint(condition=models.Q(verdict="") | models.Q(acknowledged_at__isnull=False),
                                   name="ops_alerts_verdict_when_acknowledged",
                                   violation_error_message="A verdict is given when the alert is acknowledged."),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"

    @property
    def rule(self) -> str:
        """The rule that raised it: the key's first part (escrow-insolvent:bsc → escrow-insolvent)."""
        return self.key.split(":", 1)[0]

    @property
    def state(self) -> str:
        return "resolved" if self.resolved_at else "firing"


SEVERITY_RANK = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}


class ChannelKind(models.TextChoices):
    TELEGRAM = "telegram", "Telegram bot"
    WEBHOOK = "webhook", "Generic webhook (JSON POST)"
    PAGERDUTY = "pagerduty", "PagerDuty (Events API v2)"


class AlertChannel(models.Model):
    """Where alerts go. Secrets stay in the environment: the channel names the variable that holds them."""

    name = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    enabled = models.BooleanField(default=True)
    min_severity = models.CharField(max_length=2, choices=AlertSeverity.choices, default="P3",
                                    help_text="Send alerts of this severity and worse (P0 is the worst).")
    url = models.URLField(max_length=300, blank=True, default="",
                          help_text="Webhook: the URL. Telegram: the API base (default https://api.telegram.org). "
                                    "PagerDuty: the events endpoint (default https://events.pagerduty.com/v2/enqueue).")
    chat_id = models.CharField(max_length=64, blank=True, default="", help_text="Telegram: the chat id.")
    secret_env = models.CharField(max_length=64, blank=True, default="",
                                  help_text="Name of the environment variable holding the bot token / webhook "
                                            "secret / PagerDuty integration (routing) key (e.g. TELEGRAM_BOT_TOKEN). "
                                            "The value is never stored here.")
    consecutive_failures = models.IntegerField(default=0)
    open_until = models.DateTimeField(null=True, blank=True,
                                      help_text="Circuit breaker: no delivery attempts before this time.")
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "ops_alert_channels"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(kind="webhook", url__startswith="http")
                                   | Q(kind="telegram", chat_id__gt="")
                                   | Q(kind="pagerduty", secret_env__gt=""),
                                   name="alert_channels_configured",
                                   violation_error_message="A webhook needs a URL; a Telegram channel needs a chat id; "
                                                           "a PagerDuty channel needs the variable of its routing "
                                                           "key."),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    def clean(self) -> None:
        """PagerDuty pages people (the runbook sends it P0 and P1 only): a P2 or P3 floor there would open an
        incident for every daily check and large order."""
        if self.kind == ChannelKind.PAGERDUTY and SEVERITY_RANK.get(self.min_severity, 3) > SEVERITY_RANK["P1"]:
            raise ValidationError({"min_severity": "PagerDuty pages people: send it P1 and worse (P0, P1); P2 and P3 "
                                                   "go to Telegram or a webhook."})

    def wants(self, severity: str) -> bool:
        return self.enabled and SEVERITY_RANK[severity] <= SEVERITY_RANK[self.min_severity]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (gave up)"
    SKIPPED = "skipped", "Skipped (repeat within the quiet period)"


class DeliveryEvent(models.TextChoices):
    FIRE = "fire", "Firing"
    RESOLVE = "resolve", "Resolved"


class AlertDelivery(models.Model):
    """One attempt series to deliver one alert occurrence to one channel."""

    alert = models.ForeignKey(Alert, on_delete=models.PROTECT, related_name="deliveries")
    channel = models.ForeignKey(AlertChannel, on_delete=models.PROTECT, related_name="deliveries")
    status = models.CharField(max_length=8, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    event = models.CharField(max_length=8, choices=DeliveryEvent.choices, default=DeliveryEvent.FIRE,
                             help_text="The alert firing, or its resolution (sent to the channels that had the fire).")
    attempts = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        db_table = "ops_alert_deliveries"
        ordering = ["-created_at"]
        verbose_name_plural = "alert deliveries"

    def __str__(self) -> str:
        return f"{self.alert} → {self.channel}"
