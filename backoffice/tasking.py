"""Enqueue a Celery task by its name: a service asks for the task that will call it without importing it.

A task module calls its service; a service that hands work to the worker after commit would otherwise import
that task module back, and the two would stand in a circle. The name is the task's stable identity (beat's
tables and the queue routes hold it too), so sending by name loses nothing.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import current_app

logger = logging.getLogger(__name__)


def send_task(name: str, *, options: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """Send task `name` with keyword arguments now (routing applies by name, as for `.delay`); `options` are
    Celery's sending options (expires, countdown).

    Under CELERY_TASK_ALWAYS_EAGER (a local debugging switch) the task runs here, as `.delay` would run it."""
    app = current_app
    if app.conf.task_always_eager:
        if name not in app.tasks:
            app.loader.import_default_modules()
        app.tasks[name].apply(kwargs=kwargs)
        return
    app.send_task(name, kwargs=kwargs, **(options or {}))
