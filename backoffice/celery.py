"""The Celery application: configured from Django settings under the CELERY_ namespace."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")

app = Celery("backoffice")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The ops app keeps its tasks in its rooms (their names stay ops.tasks.*: beat's tables hold them).
app.autodiscover_tasks(["ops.actions", "ops.backups", "ops.monitoring"])

# Workers publish a heartbeat that /health reads.
import ops.monitoring.heartbeat  # noqa: E402,F401
