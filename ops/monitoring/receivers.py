"""What ops.monitoring does when the chain app says the mirror moved: run the certain checks of that chain on the
actions queue (never in the sync's own process: a pause must not wait behind a catch-up, nor a sync behind it)."""
from __future__ import annotations

import logging

from django.db import transaction
from django.dispatch import receiver

from backoffice.tasking import send_task
from chain.signals import blocks_applied

logger = logging.getLogger(__name__)


@receiver(blocks_applied, dispatch_uid="ops.monitoring.check_chain_now")
def check_after_sync(sender, *, chain: str, **kwargs) -> None:
    def _enqueue():
        try:
            # Expires: a check queued behind a busy worker for longer than a few polls is superseded by newer ones.
            send_task("ops.tasks.check_chain_now", chain=chain, options={"expires": 60})
        except Exception as exc:  # broker down: the minute's beat check runs the same evaluation
            logger.warning("could not enqueue the certain checks of %s: %s", chain, exc, extra={"chain": chain})

    transaction.on_commit(_enqueue)
