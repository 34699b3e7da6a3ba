"""Celery tasks of alert delivery: thin wrappers around the delivery service, safe to run twice."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from . import delivery


@shared_task(bind=True, ignore_result=True, max_retries=None)
def deliver_alert(self, delivery_id: int) -> str:
    """Send one alert delivery; retry with exponential backoff (the service decides when to give up)."""
    close_old_connections()
    status, retry_in = delivery.attempt_delivery(delivery_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)
    return status


@shared_task(ignore_result=True)
def sweep_alert_deliveries() -> int:
    close_old_connections()
    return delivery.sweep_pending()
