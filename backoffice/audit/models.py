"""The append-only, hash-chained audit log."""
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
    as_superuser = models.BooleanField(default=False, help_text="Done with superuser powers (audited as such).")
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
