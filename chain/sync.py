"""Event sync (runbook RB-03): confirmed logs → raw events + mirror, the cursor moving in the same transaction.

Per run, for one chain, under a per-chain PostgreSQL advisory lock:
1. check the stored hash of the cursor's block against the chain; on a mismatch roll back to the
   common ancestor (reorg) and replay what remains;
2. fetch logs of the confirmed range (head − confirmations) in batches with plain eth_getLogs
   (chain.fetch), up to `<CHAIN>_SYNC_MAX_IN_FLIGHT` requests at once, later batches downloading while
   earlier ones are applied, and every batch handed on in block order;
3. apply them in transactions of whole batches: raw events (unique on chain, tx_hash, log_index),
   orders, profiles and arbitrators, block hashes, and the cursor. A crash anywhere loses the open
   transaction and nothing else, so the next run starts from the same cursor: no gap, no duplicate.

Step 3 runs pipelined (chain.pipeline: folding and writing overlap, on a second connection), or
serially, one batch per transaction (`apply_batch`), inside a caller's transaction or when the
pipeline finds raw events above the cursor, which only the serial path sorts out.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import sys
import threading
import time
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from backoffice.chain_settings import chain_prefix
from backoffice.locks import try_advisory_lock

from . import catchup, rollup, signals
from .config import ChainConfig, get_chain_config
from .fetch import RULES, Batch, FetchRules, Prefetcher, first_range_end, token_book
from .fold import apply_logs
from .mirror import TokenBook, insert_events, load_orders, logs_from_rows
from .models import BlockHash, EventSyncCursor
from .pipeline import CACHE_ORDERS, TARGET_LOGS, Interrupted, run_pipelined
from .providers import save_provider_states
from .rpc import RpcClient, RpcError, get_client, logs_call
from .sync_state import RunCache, advance_cursor, hash_window

logger = logging.getLogger(__name__)

PIPELINE_MIN_BLOCKS = 20


class SyncConfigError(RuntimeError):
    pass


@dataclass
class SyncResult:
    chain: str
    skipped: str = ""
    from_block: int | None = None
    to_block: int | None = None
    head: int | None = None
    events: int = 0
    malformed: int = 0
    rolled_back_to: int | None = None
    batches: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    seconds: float = 0.0


def chain_lock(chain: str):
    """One sync per chain across every worker and beat process (a session-level advisory lock: a killed worker
    releases it with its connection)."""
    return try_advisory_lock(f"chain-sync:{chain}")


def ensure_cursor(cfg: ChainConfig) -> EventSyncCursor:
    cursor, _ = EventSyncCursor.objects.get_or_create(
        chain=cfg.key, defaults={"last_block": max(cfg.start_block - 1, 0)})
    return cursor


def apply_batch(cfg: ChainConfig, batch: Batch, tokens: TokenBook, head: int,
                cache: RunCache | None = None) -> tuple[int, int]:
    """One transaction: events, mirror, block hashes, cursor. Returns (events applied, malformed)."""
    chain = cfg.key
    cache = cache or RunCache()
    with transaction.atomic():
        cursor = EventSyncCursor.objects.select_for_update().get(chain=chain)
        if cursor.last_block >= batch.to_block:
            return 0, 0  # already applied (a concurrent or repeated run)
        # Raw events only exist up to the cursor (rollbacks delete above it), so a batch wholly above
        # it cannot collide: it is COPied straight in.
        new = insert_events(chain, batch.logs, fresh=cursor.last_block < batch.from_block)
        fresh = [log for log in batch.logs if (log.tx_hash, log.log_index) in new]
        good = [log for log in fresh if not log.error]
        bad = [log for log in fresh if log.error]
        apply_logs(chain, good, tokens, orders=cache.orders, arbitrators=cache.arbitrators,
                   persisted=cache.persisted)
        hashes = {log.block_number: log.block_hash for log in batch.logs}
        advance_cursor(cfg, cursor, to_block=batch.to_block, to_hash=batch.to_hash, hashes=hashes, head=head, bad=bad,
                       events=len(good))
    return len(good), len(bad)


def find_common_ancestor(cfg: ChainConfig, client: RpcClient, cursor: EventSyncCursor,
                         head: int | None = None) -> int | None:
    """None when the cursor's block is still canonical; else the highest stored block that is.

    A stored block above `head` (the new chain is shorter than the old one) counts as replaced."""
    stored = dict(BlockHash.objects.filter(chain=cfg.key).values_list("number", "hash"))
    if cursor.last_block not in stored:
        return None
    numbers = sorted(stored, reverse=True)
    top = cursor.last_block if head is None else min(cursor.last_block, head)
    chain_hashes = {n: h["hash"] for n, h in client.block_headers([n for n in numbers if n <= top]).items()}
    if chain_hashes.get(cursor.last_block) == stored[cursor.last_block]:
        return None
    for n in numbers:
        if n <= cursor.last_block and chain_hashes.get(n) == stored[n]:
            return n
    oldest = min(numbers) - 1
    logger.critical("reorg deeper than the stored window on %s: rolling back to %d", cfg.key, oldest,
                    extra={"chain": cfg.key})
    return oldest


def rollback_to(chain: str, block: int) -> dict[str, int]:
    """Undo everything above `block`: raw events deleted, touched orders and arbitrators replayed from
    the events that remain, orphans removed, cursor moved back. Must run inside a transaction."""
    with connection.cursor() as cur:
        cur.execute("SELECT DISTINCT order_id FROM chain_events WHERE chain = %s AND block_number > %s "
                    "AND order_id IS NOT NULL", [chain, block])
        orders = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT DISTINCT wallet FROM chain_events WHERE chain = %s AND block_number > %s "
                    "AND wallet IS NOT NULL", [chain, block])
        wallets = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM orders WHERE chain = %s "
                    "AND onchain_id = ANY(%s)", [chain, orders])
        days = {r[0] for r in cur.fetchall()}
        cur.execute("DELETE FROM chain_events WHERE chain = %s AND block_number > %s", [chain, block])
        removed = cur.rowcount
        # Replay every remaining event of the touched orders and arbitrators, oldest first.
        cur.execute(
            "SELECT block_number, block_hash, block_time, tx_hash, log_index, address, contract, event, args "
            "FROM chain_events WHERE chain = %s AND decode_error = '' AND (order_id = ANY(%s) OR wallet = ANY(%s)) "
            "ORDER BY block_number, log_index", [chain, orders, wallets])
        logs = logs_from_rows(cur.fetchall())
    tokens = TokenBook.for_chain(chain)
    # An ArbitratorResolved amount is in its order's token: orders not replayed here are read for it.
    context = load_orders(chain, {log.args["orderId"] for log in logs
                                  if log.name == "ArbitratorResolved"} - set(orders))
    rebuilt_orders: dict[int, dict] = dict(context)
    rebuilt_arbs: dict[str, dict] = {}
    apply_logs(chain, logs, tokens, orders=rebuilt_orders, arbitrators=rebuilt_arbs, replay=True)
    for oid in context:
        del rebuilt_orders[oid]
    with connection.cursor() as cur:
        gone = [oid for oid in orders if oid not in rebuilt_orders]
        cur.execute("DELETE FROM orders WHERE chain = %s AND onchain_id = ANY(%s)", [chain, gone])
        rollup.refresh_days(chain, days)
        gone_arbs = [w for w in wallets if w not in rebuilt_arbs]
        cur.execute("DELETE FROM arbitrators WHERE chain = %s AND wallet = ANY(%s)", [chain, gone_arbs])
        cur.execute(
            "DELETE FROM user_profiles p WHERE p.first_seen_chain = %s AND p.first_seen_block > %s "
            "AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.buyer_wallet = p.wallet OR o.seller_wallet = p.wallet) "
            "AND NOT EXISTS (SELECT 1 FROM blacklist b WHERE b.wallet = p.wallet)", [chain, block])
        profiles = cur.rowcount
    BlockHash.objects.filter(chain=chain, number__gt=block).delete()
    kept = BlockHash.objects.filter(chain=chain, number=block).values_list("hash", flat=True).first()
    EventSyncCursor.objects.filter(chain=chain).update(last_block=block, last_block_hash=kept,
                                                       updated_at=timezone.now())
    return {"events_removed": removed, "orders_replayed": len(rebuilt_orders), "orders_deleted": len(gone),
            "arbitrators_deleted": len(gone_arbs), "profiles_deleted": profiles}


@contextlib.contextmanager
def cyclic_gc_paused():
    """A sync run allocates several objects per log and almost no reference cycles: reference counting
    frees them, while the cyclic collector's passes over the growing heap cost a fifth of a historical
    sync (measured: 5.2 s → 4.3 s for 119,407 events). Paused for the run (bounded by max_seconds); the
    first automatic collection after it sees every object the run left, so no cycle outlives it for long.
    (Process-wide: the worker runs prefork, one task per process.)"""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


SWITCH_INTERVAL = 0.0005  # seconds; Python's default is 0.005
_switching = {"runs": 0, "was": None}
_switching_lock = threading.Lock()


@contextlib.contextmanager
def threads_switching_often():
    """A run is a dozen threads waiting on sockets (the requests in flight, the prefetcher, the writer) and one or
    two computing (decoding, folding). With Python's 5 ms switch interval each answer can wait that long for a
    computing thread to let go of the interpreter before the next request is sent: on a sparse catch-up the
    window ran 15 % short of full. 0.5 ms keeps it full (measured: empty answers 57.8 → 54.3 ms, the catchup
    benchmark 4.9 → 4.5 s). Set for the run and put back by the last run to end (process-wide, as the collector)."""
    with _switching_lock:
        if _switching["runs"] == 0:
            _switching["was"] = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL)
        _switching["runs"] += 1
    try:
        yield
    finally:
        with _switching_lock:
            _switching["runs"] -= 1
            if _switching["runs"] == 0:
                sys.setswitchinterval(_switching["was"])


def sync_chain(chain: str, *, client: RpcClient | None = None, max_seconds: float = 25.0,
               max_blocks: int | None = None, rules: FetchRules = RULES) -> SyncResult:
    """One sync run for one chain. Safe to run twice at once (the second returns skipped='locked').
    `rules`: how eth_getLogs ranges are sized (chain.fetch.FetchRules; benchmarks compare the older logic)."""
    cfg = get_chain_config(chain)
    result = SyncResult(chain=chain)
    if not cfg.is_configured:
        result.skipped = "not configured"
        return result
    client = client or get_client(chain)
    started = time.monotonic()
    with chain_lock(chain) as got:
        if not got:
            result.skipped = "locked"
            return result
        try:
            with cyclic_gc_paused(), threads_switching_often():
                _run(cfg, client, result, started, max_seconds, max_blocks, rules)
        except Exception as exc:
            record_sync_error(chain, exc)
            raise
        finally:
            save_provider_states(chain, client)
            result.seconds = time.monotonic() - started
    if result.to_block is not None and result.from_block is not None and result.to_block >= result.from_block:
        signals.blocks_applied.send(sender=SyncResult, chain=chain, from_block=result.from_block,
                                    to_block=result.to_block)
    return result


def _run(cfg: ChainConfig, client: RpcClient, result: SyncResult, started: float, max_seconds: float,
         max_blocks: int | None, rules: FetchRules) -> None:
    cursor = ensure_cursor(cfg)
    first = None
    if getattr(client, "verified_chain_id", None) is None:
        head, first = _first_round_trip(cfg, client, cursor.last_block + 1)
    else:
        head = client.block_number()
    result.head = head
    ancestor = find_common_ancestor(cfg, client, cursor, head)
    if ancestor is not None:
        with transaction.atomic():
            summary = rollback_to(cfg.key, ancestor)
        logger.warning("reorg on %s: rolled back to block %d", cfg.key, ancestor, extra={"chain": cfg.key, **summary})
        result.rolled_back_to = ancestor
        cursor.refresh_from_db()
    target = confirmed = head - cfg.confirmations
    catchup.begin(cfg.key, cursor_block=cursor.last_block, target=confirmed, in_flight=client.window.current())
    if max_blocks is not None:
        target = min(target, cursor.last_block + max_blocks)
    start = cursor.last_block + 1
    result.from_block = start
    if first is not None and (first[0] != start or first[1] > target):
        first = None  # rolled back meanwhile, or beyond what this run applies
    if start > target:
        EventSyncCursor.objects.filter(chain=cfg.key).update(head_block=head, head_seen_at=timezone.now())
        catchup.end_run(cfg.key, reached=start > confirmed, in_flight=client.window.current())
        return

    tokens = TokenBook.for_chain(cfg.key)  # extended by both paths with the tokens they meet
    deadline = started + max_seconds
    fetching = {"deadline": deadline, "known_tokens": set(tokens.tokens), "in_flight": cfg.max_in_flight,
                "rules": rules, "hash_from": head - hash_window(cfg), "first": first}
    # Pipelined for a catch-up; a poll of a few blocks (BSC's every 3 s) is not worth a second connection.
    # Inside a caller's transaction the writer's own connection could not see its rows: serial too.
    if not connection.in_atomic_block and target - start + 1 > PIPELINE_MIN_BLOCKS:
        try:
            _pipelined(cfg, client, result, start, target, head, tokens, fetching)
            start = None
        except Interrupted as exc:
            logger.warning("pipelined sync of %s interrupted, going on serially: %s", cfg.key, exc,
                           extra={"chain": cfg.key})
            start = EventSyncCursor.objects.get(chain=cfg.key).last_block + 1
    if start is not None:
        _serial(cfg, client, result, start, target, head, tokens, fetching)
    catchup.end_run(cfg.key, reached=(result.to_block or 0) >= confirmed, in_flight=client.window.current())


def _first_round_trip(cfg: ChainConfig, client: RpcClient, start: int) -> tuple[int, tuple | None]:
    """A process's first run: the chain id (checked), the head and the first range's logs in one batch, so a distant
    provider's latency is paid once before the first range is answered, not twice. Returns the head and
    (from, to, logs) of the fetch's own first range (`first_range_end`). A provider that refuses it (a cap of fewer
    blocks) is asked again for the first two alone; the fetch learns its cap from its own refusal."""
    end = first_range_end(cfg, client, start)
    calls = [("eth_chainId", []), ("eth_blockNumber", [])]
    try:
        chain_id, head_hex, logs = client.batch([*calls, logs_call(start, end, cfg.contracts)])
        first = (start, end, logs)
        client.window.answered(client.last_seconds(), len(logs))
    except RpcError:
        chain_id, head_hex = client.batch(calls)
        first = None
    actual, head = int(chain_id, 16), int(head_hex, 16)
    if actual != cfg.chain_id:
        raise SyncConfigError(f"{cfg.key}: the RPC serves chain id {actual}, expected {cfg.chain_id}: "
                              f"check {chain_prefix(cfg.key)}_RPC_URL and {chain_prefix(cfg.key)}_CHAIN_ID.")
    client.verified_chain_id = actual
    return head, first


def _record(result: SyncResult, events: int, malformed: int, ranges: list[tuple[int, int]]) -> None:
    result.events += events
    result.malformed += malformed
    result.batches += len(ranges)
    result.ranges.extend(ranges)
    result.to_block = ranges[-1][1]


def _pipelined(cfg: ChainConfig, client: RpcClient, result: SyncResult, start: int, target: int, head: int,
               tokens: TokenBook, fetching: dict) -> None:
    with Prefetcher(cfg, client, start, target, **fetching) as batches:
        run_pipelined(cfg, batches, head=head, cache=RunCache(),
                      tokens_for=lambda batch: token_book(cfg, client, batch.logs, batch.token_meta, tokens),
                      on_commit=lambda c: _record(result, c.events, c.malformed, c.ranges))


def _serial(cfg: ChainConfig, client: RpcClient, result: SyncResult, start: int, target: int, head: int,
            tokens: TokenBook, fetching: dict) -> None:
    cache = RunCache()
    with Prefetcher(cfg, client, start, target, chunk_logs=TARGET_LOGS, depth=1, **fetching) as batches:
        for batch in batches:
            token_book(cfg, client, batch.logs, batch.token_meta, tokens)
            applied, bad = apply_batch(cfg, batch, tokens, head, cache)
            if len(cache.orders) > CACHE_ORDERS:  # bounded memory on a very long catch-up
                cache.clear()
            _record(result, applied, bad, [(batch.from_block, batch.to_block)])


def record_sync_error(chain: str, exc: Exception) -> None:
    """Keep the last error on the cursor for staff (RB-03), in its own small transaction."""
    message = f"{type(exc).__name__}: {exc}"[:2000]
    logger.error("sync failed on %s: %s", chain, message, extra={"chain": chain})
    with contextlib.suppress(Exception):
        connection.close_if_unusable_or_obsolete()
        if connection.connection is not None and not connection.is_usable():
            connection.close()
        EventSyncCursor.objects.filter(chain=chain).update(last_error=message, last_error_at=timezone.now())
