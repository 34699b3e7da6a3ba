"""register_schedules: write the beat schedule (ops.monitoring.schedules) into django-celery-beat, idempotently."""
from __future__ import annotations

import json
import re

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from backoffice.queues import CHAIN_TASKS
from ops.monitoring.schedules import schedules

# The per-chain entries this command writes (ops.monitoring.schedules): poll-<short>-events, reconcile-<short>-orders.
CHAIN_ENTRY_RE = re.compile(r"^(poll-[a-z0-9_]+-events|reconcile-[a-z0-9_]+-orders)$")
# Put in front of the description of an entry this command disabled, so that it knows to enable the entry again
# when its chain comes back (and never one that staff disabled themselves).
DISABLED_BY_US = "Disabled by register_schedules:"
DISABLED_NOTE = DISABLED_BY_US + " chain {chain!r} is not in CHAINS. "


def _entry_chain(task: PeriodicTask) -> str | None:
    """The chain of a per-chain entry this command wrote, or None for any other entry."""
    if task.task not in CHAIN_TASKS or not CHAIN_ENTRY_RE.match(task.name):
        return None
    try:
        chain = json.loads(task.kwargs or "{}").get("chain")
    except (ValueError, AttributeError):
        return None
    return chain if isinstance(chain, str) else None


class Command(BaseCommand):
    help = "Register every periodic task by name. Existing entries keep staff edits unless --reset."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Overwrite timing and arguments of existing entries.")

    @transaction.atomic
    def handle(self, *args, reset: bool = False, **options):
        created = updated = moved = enabled = 0
        items = schedules()
        for item in items:
            defaults = {"task": item.task, "kwargs": json.dumps(item.kwargs, sort_keys=True),
                        "description": item.description, "interval": None, "crontab": None,
                        "queue": item.queue}
            if item.every_seconds is not None:
                # IntervalSchedule stores whole units: sub-second periods are kept in microseconds.
                micro = round(item.every_seconds * 1_000_000)
                if micro % 1_000_000 == 0:
                    defaults["interval"], _ = IntervalSchedule.objects.get_or_create(
                        every=micro // 1_000_000, period=IntervalSchedule.SECONDS)
                else:
                    defaults["interval"], _ = IntervalSchedule.objects.get_or_create(
                        every=micro, period=IntervalSchedule.MICROSECONDS)
            else:
                defaults["crontab"], _ = CrontabSchedule.objects.get_or_create(timezone="UTC", **item.crontab)
            task = PeriodicTask.objects.filter(name=item.name).first()
            # Its chain is back in CHAINS: undo what this command did, and only that (not a staff member's disabling).
            back = task is not None and not task.enabled and task.description.startswith(DISABLED_BY_US)
            if task is None:
                PeriodicTask.objects.create(name=item.name, **defaults)
                created += 1
            elif reset:
                for key, value in defaults.items():
                    setattr(task, key, value)
                task.save()
                updated += 1
            elif task.task != item.task or task.queue != item.queue:
                # Which function runs, and on which queue, is code, not a staff setting: follow a task that moved
                # module or queue.
                task.task, task.queue = item.task, item.queue
                task.save(update_fields=["task", "queue"])
                moved += 1
            if back:
                task.enabled, task.description = True, item.description
                task.save(update_fields=["enabled", "description"])
                enabled += 1
        disabled = self._disable_removed_chains(defined={item.name for item in items})
        self.stdout.write(f"Schedules: {created} created, {updated} reset, {moved} moved to their task's new path or "
                          f"queue, {enabled} enabled again (their chain is back in CHAINS), {len(disabled)} disabled, "
                          f"{len(items)} defined.")
        for task, chain in disabled:
            self.stdout.write(f"Disabled {task.name}: chain {chain!r} is not in CHAINS "
                              f"({', '.join(settings.CHAINS)}), and no worker consumes its queue {task.queue}. "
                              f"Kept with its timing: adding {chain} to CHAINS again and re-running "
                              f"register_schedules enables it.")

    def _disable_removed_chains(self, *, defined: set[str]) -> list[tuple[PeriodicTask, str]]:
        """Disable (never delete: staff may have retimed them) the per-chain entries of chains no longer in CHAINS,
        which beat would otherwise keep sending to a sync.<chain> queue that no worker consumes."""
        disabled = []
        for task in PeriodicTask.objects.filter(enabled=True).exclude(name__in=defined).order_by("name"):
            chain = _entry_chain(task)
            if chain is None or chain in settings.CHAINS:
                continue
            task.enabled = False
            task.description = DISABLED_NOTE.format(chain=chain) + task.description
            # save(), not update(): django-celery-beat tells beat about the change from the model's signals.
            task.save(update_fields=["enabled", "description"])
            disabled.append((task, chain))
        return disabled
