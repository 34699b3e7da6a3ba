"""Trust and safety listening to the chain: after a sync run applied blocks, screen the wallets it met.

Only a wake-up: the wallets are queued by a database trigger whatever writes them, and the screen-new-wallets beat
picks up anything a lost wake-up left; this makes a sanctioned wallet's first order flagged within seconds.
"""
from __future__ import annotations

from django.db import transaction
from django.dispatch import receiver

from backoffice.tasking import send_task
from chain.signals import blocks_applied

from .models import SanctionsScreening


@receiver(blocks_applied, dispatch_uid="disputes.screen_after_sync")
def screen_after_sync(chain: str, **kwargs) -> None:
    if SanctionsScreening.objects.pending().exists():
        transaction.on_commit(lambda: send_task("disputes.tasks.screen_new_wallets"))
