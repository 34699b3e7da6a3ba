"""Celery tasks of trust and safety: thin wrappers around one service each, safe to run twice."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from . import services
from .sanctions import services as sanctions


@shared_task(ignore_result=True)
def lift_expired_blacklist_entries() -> int:
    close_old_connections()
    return services.lift_expired_blacklist_entries()


@shared_task(ignore_result=True)
def flag_repeat_offenders() -> int:
    close_old_connections()
    return services.flag_repeat_offenders()


@shared_task(ignore_result=True)
def flag_fast_order_makers() -> int:
    close_old_connections()
    return services.flag_fast_order_makers()


@shared_task(ignore_result=True)
def check_dispute_rate() -> bool:
    close_old_connections()
    return services.check_dispute_rate()


@shared_task(ignore_result=True)
def screen_new_wallets() -> int:
    """After a sync run met new wallets (chain.signals.blocks_applied), and every minute in case a wake-up was lost."""
    close_old_connections()
    return sanctions.screen_new_wallets().screened


@shared_task(ignore_result=True)
def refresh_sanctions_lists() -> int:
    """Daily: download each SANCTIONS_LIST_URL and import it if it changed (nothing when none is set)."""
    close_old_connections()
    return len(sanctions.refresh_sanctions_lists().imported)
