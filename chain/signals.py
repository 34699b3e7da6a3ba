"""Counters the RPC clients keep in memory reach the database after each Celery task and web request, so
rate-limit waits met by an action, a health check or a page count in /metrics as the sync's do; and `sync_applied`,
which says a sync run applied events."""
from __future__ import annotations

from celery.signals import task_postrun
from django.core.signals import request_finished
from django.dispatch import Signal, receiver

# Sent by the sync_chain task after a run that applied events (keyword arguments: chain, events), once its
# transactions are committed. Apps above the chain listen without the chain knowing them: trust and safety screens
# the wallets the run met (its own queue and worker, so the sync's hot path never waits on it).
sync_applied = Signal()


@task_postrun.connect(dispatch_uid="chain.flush_rpc_counts.task")
def flush_after_task(**kwargs) -> None:
    from .providers import flush_rpc_counts

    flush_rpc_counts()


@receiver(request_finished, dispatch_uid="chain.flush_rpc_counts.request")
def flush_after_request(**kwargs) -> None:
    from .providers import flush_rpc_counts

    flush_rpc_counts()
