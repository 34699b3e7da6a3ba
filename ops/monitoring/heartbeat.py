"""Celery workers announce themselves in Redis every few seconds, so /health counts live workers cheaply
(no broadcast and wait, as `celery inspect` would need)."""
from __future__ import annotations

import logging
import threading
import time

from celery.signals import task_postrun, worker_ready, worker_shutdown

from .health import TASKS_DONE_KEY, WORKER_HEARTBEAT_KEY, redis_client

logger = logging.getLogger(__name__)
INTERVAL = 5.0
_stop = threading.Event()


def _beat(hostname: str) -> None:
    while not _stop.is_set():
        try:
            redis_client().hset(WORKER_HEARTBEAT_KEY, hostname, time.time())
        except Exception as exc:  # Redis down: health will say so; keep trying
            logger.warning("worker heartbeat failed: %s", type(exc).__name__)
        _stop.wait(INTERVAL)


@worker_ready.connect
def start_heartbeat(sender=None, **kwargs) -> None:
    threading.Thread(target=_beat, args=(sender.hostname,), name="heartbeat", daemon=True).start()


@worker_shutdown.connect
def stop_heartbeat(sender=None, **kwargs) -> None:
    _stop.set()
    try:
        redis_client().hdel(WORKER_HEARTBEAT_KEY, sender.hostname)
    except Exception:
        pass


@task_postrun.connect
def count_task(sender=None, state=None, **kwargs) -> None:
    """Task throughput for the Grafana panel: one Redis HINCRBY per finished task."""
    try:
        redis_client().hincrby(TASKS_DONE_KEY, (state or "UNKNOWN").lower(), 1)
    except Exception:
        pass
