"""Changes staff make to the beat schedule (the entries themselves are code: schedules.py, register_schedules)."""
from __future__ import annotations

from typing import Any

from django.db import transaction
from django_celery_beat.models import PeriodicTask

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm


def set_periodic_task_enabled(*, actor: Any, task: PeriodicTask, enabled: bool, reason: str = "") -> bool:
    """Enable or disable one beat entry; False (nothing written) when it already was.

    Side effects: one audit row (before/after) in the same transaction. PeriodicTask.save() marks the schedule
    changed, so beat reloads it, and clears last_run_at when disabling (django-celery-beat's own rule).
    """
    require_perm(actor, "django_celery_beat.change_periodictask", "enable or disable beat schedules")
    with transaction.atomic():
        task = PeriodicTask.objects.select_for_update().get(pk=task.pk)
        if task.enabled == enabled:
            return False
        task.enabled = enabled
        task.save()
        record_audit(actor=actor, action="change_periodictask", obj=task, before={"enabled": not enabled},
                     after={"enabled": enabled}, reason=reason)
    return True
