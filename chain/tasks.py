"""Celery tasks of the chain mirror: thin wrappers that take chain names and call one service."""
from __future__ import annotations

import logging

from celery import shared_task
from django.db import close_old_connections

from . import rollup, services, sync
from .signals import sync_applied

logger = logging.getLogger(__name__)


@shared_task(ignore_result=True, acks_late=True)
def sync_chain(chain: str) -> dict:
    """Runbook §5 poll-<chain>-events. Safe to run twice at once: the second finds the lock taken."""
    close_old_connections()
    try:
        result = sync.sync_chain(chain)
        if result.events:
            sync_applied.send(sender=sync_chain, chain=chain, events=result.events)
    finally:
        close_old_connections()
    return {"chain": chain, "events": result.events, "to_block": result.to_block, "skipped": result.skipped}


@shared_task(ignore_result=True)
def reconcile_orders(chain: str, sample: int | None = 200) -> dict:
    close_old_connections()
    from .config import get_chain_config

    if not get_chain_config(chain).is_configured:
        return {"chain": chain, "skipped": "not configured"}
    result = services.reconcile_orders(chain=chain, sample=sample)
    return {"chain": chain, "checked": result.checked, "drifted": len(result.drifted_orders)}


@shared_task(ignore_result=True)
def refresh_top_sellers() -> dict:
    """Runbook §9 top sellers, for the dashboard. Safe to run twice: each run replaces the snapshot."""
    close_old_connections()
    return {"sellers": rollup.refresh_top_sellers()}
