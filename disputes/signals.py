"""Trust and safety listening to the chain: after a sync run applied events, screen the wallets it met.

Only a wake-up: the wallets are queued by a database trigger whatever writes them, and the screen-new-wallets beat
picks up anything a lost wake-up left; this makes a sanctioned wallet's first order flagged within seconds.
"""
from __future__ import annotations

from django.dispatch import receiver

from backoffice.tasking import send_task
from chain.signals import sync_applied

from .models import SanctionsScreening


@receiver(sync_applied, dispatch_uid="disputes.screen_after_sync")
def screen_after_sync(chain: str, events: int, **kwargs) -> None:
    if SanctionsScreening.objects.pending().exists():
        send_task("disputes.tasks.screen_new_wallets")
