"""Shared by the serial and the pipelined sync: a run's cache of states, and moving the cursor in a batch's
transaction."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.utils import timezone

from . import catchup
from .config import ChainConfig
from .events import Log
from .models import BlockHash, EventSyncCursor

logger = logging.getLogger(__name__)

HASH_WINDOW_MIN = 64


@dataclass
class RunCache:
    """Order and arbitrator states carried from one batch to the next within one run (under the chain lock).

    Dropped with the run: any error ends the run, so a rolled-back batch never leaves stale states.
    """

    orders: dict[int, dict] = field(default_factory=dict)
    persisted: set[int] = field(default_factory=set)
    arbitrators: dict[str, dict] = field(default_factory=dict)

    def clear(self) -> None:
        self.orders.clear()
        self.persisted.clear()
        self.arbitrators.clear()


def hash_window(cfg: ChainConfig) -> int:
    """How many blocks below the cursor keep their hashes, for the reorg check."""
    return max(HASH_WINDOW_MIN, 2 * cfg.confirmations)


def advance_cursor(cfg: ChainConfig, cursor: EventSyncCursor, *, to_block: int, to_hash: str | None,
                   hashes: dict[int, str], head: int, bad: list[Log], events: int = 0) -> None:
    """Inside a batch's transaction: keep the block hashes of the unconfirmed window, move the cursor, record
    malformed logs for staff (RB-03), and count a catch-up's progress (`events` applied in the transaction).
    Without `to_hash` (a catch-up's range far below the head, where no reorg the sync guards against reaches), the
    cursor has no hash and the next run checks none."""
    chain = cfg.key
    window = hash_window(cfg)
    hashes = {**hashes, to_block: to_hash} if to_hash is not None else hashes
    BlockHash.objects.bulk_create(
        [BlockHash(chain=chain, number=n, hash=h) for n, h in hashes.items() if n > to_block - window],
        update_conflicts=True, unique_fields=["chain", "number"], update_fields=["hash"])
    BlockHash.objects.filter(chain=chain, number__lte=to_block - window).delete()
    now = timezone.now()
    cursor.last_block, cursor.last_block_hash, cursor.updated_at = to_block, to_hash, now
    cursor.head_block, cursor.head_seen_at = head, now
    fields = ["last_block", "last_block_hash", "updated_at", "head_block", "head_seen_at"]
    if bad:
        first = bad[0]
        cursor.last_error = (f"{len(bad)} malformed log(s) recorded and skipped, first at block "
                             f"{first.block_number} tx {first.tx_hash} log {first.log_index}: {first.error}")[:2000]
        cursor.last_error_at = now
        fields += ["last_error", "last_error_at"]
        for log in bad:
            logger.error("malformed log skipped: %s", log.error, extra={
                "chain": chain, "block": log.block_number, "tx_hash": log.tx_hash, "log_index": log.log_index})
    cursor.save(update_fields=fields)
    catchup.advance(chain, to_block=to_block, events=events)
