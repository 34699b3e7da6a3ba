"""Counters the RPC clients keep in memory reach the database after each Celery task and web request, so
rate-limit waits met by an action, a health check or a page count in /metrics as the sync's do; and
`blocks_applied`, which tells whoever listens (the certain checks of ops.monitoring) that the mirror moved."""
from __future__ import annotations

from celery.signals import task_postrun
from django.core.signals import request_finished
from django.dispatch import Signal, receiver

# Sent after a sync run committed new blocks (kwargs: chain, from_block, to_block). The chain app knows nothing of
# its listeners: the checks that compare the chain with the mirror run again at once, so a drained escrow is seen
# in blocks, not at the next minute's check.
blocks_applied = Signal()


@task_postrun.connect(dispatch_uid="chain.flush_rpc_counts.task")
def flush_after_task(**kwargs) -> None:
    from .providers import flush_rpc_counts

    flush_rpc_counts()


@receiver(request_finished, dispatch_uid="chain.flush_rpc_counts.request")
def flush_after_request(**kwargs) -> None:
    from .providers import flush_rpc_counts

    flush_rpc_counts()
