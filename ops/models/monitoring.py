"""Pause drills: each rehearsal of the automatic pause on a fork of a chain, kept with its figures."""
from __future__ import annotations

from django.db import models

from chain.models import chain_choices


class DrillStatus(models.TextChoices):
    RUNNING = "running", "Running"
    PASSED = "passed", "Passed: paused on the fork"
    FAILED = "failed", "Failed"


class DrillRunQuerySet(models.QuerySet):
    def passed(self):
        return self.filter(status=DrillStatus.PASSED)


class DrillRun(models.Model):
    """One `pause_drill`: the chain forked at the mirror's cursor, the escrow drained there, and the blocks and
    seconds until the back office's checks saw it (twice) and paused() was true on the fork."""
    chain = models.CharField(max_length=16, choices=chain_choices)
    status = models.CharField(max_length=8, choices=DrillStatus.choices, default=DrillStatus.RUNNING)
    actor_label = models.CharField(max_length=150, help_text="Who started it (a person, or the schedule).")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    fork_block = models.BigIntegerField(null=True, blank=True, help_text="The mirror's cursor: the fork starts here.")
    drain_block = models.BigIntegerField(null=True, blank=True)
    detected_block = models.BigIntegerField(null=True, blank=True,
                                            help_text="Where the check confirmed the insolvency (seen twice).")
    paused_block = models.BigIntegerField(null=True, blank=True)
    detect_blocks = models.IntegerField(null=True, blank=True, help_text="Blocks from the drain to the P0.")
    pause_blocks = models.IntegerField(null=True, blank=True, help_text="Blocks from the drain to paused().")
    pause_seconds = models.FloatField(null=True, blank=True, help_text="Seconds from the drain to paused().")
    steps = models.JSONField(default=list, blank=True, help_text="What happened, in order, with times.")
    error = models.TextField(blank=True, default="")

    objects = DrillRunQuerySet.as_manager()

    class Meta:
        db_table = "ops_pause_drills"
        ordering = ["-started_at"]
        verbose_name = "pause drill"
        permissions = [("run_drillrun", "Can run a pause drill")]
        constraints = [
            models.CheckConstraint(condition=~models.Q(status="passed") | models.Q(paused_block__isnull=False),
                                   name="ops_pause_drills_passed_paused"),
        ]

    def __str__(self) -> str:
        return f"pause drill #{self.pk} {self.chain} ({self.status})"
