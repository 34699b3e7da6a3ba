"""The RPC providers' stored view (chain_rpc_providers): breaker states from the sync, and the rate-limit,
budget and split counters from every process that calls a provider (sync, actions, checks, web)."""
from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F

from .models import RpcProvider
from .rpc import RpcClient, clients

logger = logging.getLogger(__name__)


@transaction.atomic  # all of them or none: counts given back after a failure must not have been added in part
def _add_counts(chain: str, counts: dict[str, dict[str, float]]) -> None:
    for role, gained in counts.items():
        gained = {k: F(k) + v for k, v in gained.items() if v}
        if gained:
            RpcProvider.objects.get_or_create(chain=chain, role=role)
            RpcProvider.objects.filter(chain=chain, role=role).update(**gained)


def save_provider_states(chain: str, client: RpcClient) -> None:
    """The breakers' states, and the rate-limit and split counters added to the stored totals."""
    counts = client.take_counts()
    try:
        for snap in client.snapshot():
            RpcProvider.objects.update_or_create(chain=chain, role=snap["role"], defaults={
                k: v for k, v in snap.items() if k != "role"})
        _add_counts(chain, counts)
    except Exception:  # the database is down: the states wait for the next save, the counts with them
        client.give_back_counts(counts)
        logger.warning("could not save the RPC providers of %s", chain, exc_info=True, extra={"chain": chain})


def flush_rpc_counts() -> int:
    """Add what this process's clients counted since the last save to the stored totals (after each Celery
    task and web request; nothing is written when nothing was counted). Returns the providers written."""
    written = 0
    for chain, client in clients():
        counts = {role: c for role, c in client.take_counts().items() if any(c.values())}
        if not counts:
            continue
        try:
            _add_counts(chain, counts)
            written += len(counts)
        except Exception:  # the database is down: kept for the next save, and never the task's own failure
            client.give_back_counts(counts)
            logger.warning("could not save RPC counters of %s", chain, exc_info=True, extra={"chain": chain})
    return written
