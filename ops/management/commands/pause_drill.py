"""pause_drill: rehearse the automatic pause of a chain on a fork (RB-05), and keep the result."""
from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ops.models import DrillStatus
from ops.monitoring.drills import TIMEOUT_SECONDS, run_pause_drill


class Command(BaseCommand):
    help = ("Fork the chain at the mirror's cursor (anvil), drain the escrow there, and measure the blocks and seconds "
            "until the checks confirm it and paused() is true on the fork. Nothing touches the real chain.")

    def add_arguments(self, parser):
        parser.add_argument("--chain", required=True, help="The chain to drill (one of CHAINS).")
        parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="Give up after this many seconds.")

    def handle(self, *args, chain: str, timeout: float, **options):
        run = run_pause_drill(actor="system:pause_drill", chain=chain, timeout=timeout)
        for step in run.steps:
            self.stdout.write(f"{step['seconds']:>7.2f} s  {step['text']}")
        if run.status != DrillStatus.PASSED:
            raise CommandError(f"Pause drill #{run.pk} failed: {run.error}")
        self.stdout.write(self.style.SUCCESS(
            f"Pause drill #{run.pk} passed: confirmed {run.detect_blocks} blocks and paused {run.pause_blocks} blocks "
            f"({run.pause_seconds:g} s) after the drain."))
