"""Celery beat's scheduler: django-celery-beat's database scheduler, writing what it has sent within seconds.

django-celery-beat keeps each entry's last run (`last_run_at`) in memory and writes the entries it sent every three
minutes. The beat watch (ops.monitoring.health.check_beat, /metrics, its alert rules) judges an entry late from that
column: after a restart that followed downtime, every entry beat had just sent still read as not run for up to those
three minutes, and /health said "check that celery beat is running" while it was. Written every SYNC_SECONDS instead:
a few one-row updates (the entries sent since the last write), whatever the number of entries.
"""
from __future__ import annotations

from django_celery_beat.schedulers import DatabaseScheduler

SYNC_SECONDS = 10


class Scheduler(DatabaseScheduler):
    sync_every = SYNC_SECONDS
