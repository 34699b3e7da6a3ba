"""register_schedules: write the beat schedule (ops.schedules) into django-celery-beat, idempotently."""
from __future__ import annotations

import json

from django.core.management.base import BaseCommand
from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from ops.schedules import schedules


class Command(BaseCommand):
    help = "Register every periodic task by name. Existing entries keep staff edits unless --reset."

    def add_arguments(self, parser):
        parser.add_argument("--reset", action="store_true", help="Overwrite timing and arguments of existing entries.")

    @transaction.atomic
    def handle(self, *args, reset: bool = False, **options):
        created = updated = moved = 0
        for item in schedules():
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
        self.stdout.write(f"Schedules: {created} created, {updated} reset, {moved} moved to their task's new path or queue, "
                          f"{len(schedules())} defined.")
