"""The sync's pipelined run: fetching, folding and writing overlap instead of taking turns.

Three threads, each mostly waiting on a different process: the prefetcher on the RPC node
(`chain.fetch.Prefetcher`), this module's writer on PostgreSQL, and the caller, which folds each
fetched batch into order and arbitrator states (pure Python) and hands the writer its raw events as
COPY text. A transaction spans up to TARGET_LOGS logs, or ends at a quiet batch once it holds a burst or has been
open COMMIT_SECONDS (a sparse catch-up commits about once a second, and after each burst rather than inside it). The
writer opens it and streams its events into one COPY while later batches are still being fetched, then writes the
fold's states, the block hashes and the cursor, and commits. So each committed transaction is exactly what the
serial path would have written: no gap, no duplicate, and a crash loses only the open transaction.

The writer has its own database connection. It never reads the mirror; the folder reads only states
no transaction of this run has touched (the run's cache holds every other), so neither waits for the
other's uncommitted rows.
"""
from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psycopg.errors
from django.db import connection, transaction

from .config import ChainConfig
from .events import Log
from .fetch import Batch
from .fold import Fold, Writes
from .mirror import EVENT_COLUMNS, TokenBook, event_lines
from .models import EventSyncCursor
from .sync_state import RunCache, advance_cursor

logger = logging.getLogger(__name__)

TARGET_LOGS = 25_000  # logs per transaction: big enough to amortise its fixed writes, small enough to lose little
CACHE_ORDERS = 200_000  # order states kept across transactions of one run (bounded memory on a long catch-up)
# A transaction of few logs stays open this long before its blocks end it: each costs a dozen round trips to the
# database (tens of milliseconds among the fetch threads), and an empty stretch would otherwise commit every
# `batch_blocks` blocks.
COMMIT_SECONDS = 1.0
# ... and ends at a quiet batch (fewer than QUIET_LOGS logs) rather than inside a burst: an order created before the
# commit and settled after it would be written twice (copied, then updated under the orders table's indexes), and a
# burst committed as soon as it is folded is written while the quiet stretch after it is still being fetched, not
# after the last answer (the catchup benchmark's last busy half-hour). A burst of BURST_LOGS is committed at once;
# a transaction open LONGEST_SECONDS ends wherever it is, so a crash loses at most a few seconds' fetching.
QUIET_LOGS = 100
BURST_LOGS = 2_000
LONGEST_SECONDS = 4 * COMMIT_SECONDS


class Interrupted(RuntimeError):
    """The pipelined run cannot go on as planned (the cursor moved, or raw events above it exist):
    what it committed stays, and the caller finishes the run on the serial path, which handles both."""


class _Abandoned(RuntimeError):
    """The open transaction was rolled back because the run stopped (the reason is raised elsewhere)."""


@dataclass
class _Begin:
    from_block: int


@dataclass
class _End:
    to_block: int
    to_hash: str | None
    hashes: dict[int, str]
    writes: Writes
    bad: list[Log]
    events: int
    ranges: list[tuple[int, int]]


_ABORT = object()
_STOP = object()


@dataclass
class Committed:
    events: int
    malformed: int
    ranges: list[tuple[int, int]]  # the fetched batches it holds


class Writer:
    """A thread writing the transactions `send` describes, in order, on its own database connection:
    _Begin, then COPY text of raw events, then _End. `close(abort=True)` rolls back an open one."""

    def __init__(self, cfg: ChainConfig, head: int, on_commit: Callable[[Committed], None], depth: int = 16):
        self.cfg, self.head, self.on_commit = cfg, head, on_commit
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._abort = threading.Event()
        self._idle = threading.Condition()
        self._sent = self._done = 0  # transactions sent and finished (committed or failed)
        self._thread = threading.Thread(target=self._run, name=f"write-{cfg.key}", daemon=True)
        self._thread.start()

    def send(self, item: _Begin | str | _End) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self._queue.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, _Begin):
            self._sent += 1

    def wait_idle(self) -> None:
        """Until every transaction sent so far is committed; raises the writer's error."""
        with self._idle:
            while self._done < self._sent and self.error is None:
                self._idle.wait(0.1)
        if self.error is not None:
            raise self.error

    def close(self, *, abort: bool = False) -> None:
        """Stop the thread once what was sent is written, or at once with `abort` (rolling back an open
        transaction; those already complete in the queue are still committed)."""
        if abort:
            self._abort.set()
        else:
            with contextlib.suppress(BaseException):  # a writer that failed has stopped already
                self.send(_STOP)
        self._thread.join()  # it never waits on a full queue, and stops waiting on an empty one at the abort
        if abort and self.error is not None and not isinstance(self.error, _Abandoned):
            logger.error("sync writer of %s failed too: %s: %s", self.cfg.key, type(self.error).__name__,
                         self.error, extra={"chain": self.cfg.key})

    def _next(self):
        """The next item sent, or _ABORT once `close(abort=True)` is called (never blocks past it)."""
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._abort.is_set():
                    return _ABORT

    def _run(self) -> None:
        try:
            while (item := self._next()) is not _STOP and item is not _ABORT:
                try:
                    self._transaction(item)
                except BaseException as exc:
                    self.error = exc  # before it counts as done: wait_idle must see the failure
                    raise
                finally:
                    with self._idle:
                        self._done += 1
                        self._idle.notify_all()
        except BaseException as exc:  # noqa: B036 - handed to the sending thread, which raises it
            self.error = exc
        finally:
            connection.close()  # this thread's own connection

    def _transaction(self, begin: _Begin) -> None:
        chain = self.cfg.key
        with transaction.atomic():
            cursor = EventSyncCursor.objects.select_for_update().get(chain=chain)
            if cursor.last_block != begin.from_block - 1:
                raise Interrupted(f"{chain}: the cursor is at {cursor.last_block}, not {begin.from_block - 1}")
            # Raw events only exist up to the cursor (rollbacks delete above it), so a batch wholly above it
            # cannot collide: its events are COPied straight in, and the unique constraint still guards them.
            try:
                with connection.cursor() as cur, cur.connection.cursor().copy(
                        f"COPY chain_events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
                    while isinstance(item := self._next(), str):
                        copy.write(item)
            except psycopg.errors.UniqueViolation as exc:
                raise Interrupted(f"{chain}: raw events above the cursor are stored already: {exc}") from exc
            if not isinstance(item, _End):
                raise _Abandoned(f"{chain}: transaction from block {begin.from_block} abandoned")
            item.writes.write()
            advance_cursor(self.cfg, cursor, to_block=item.to_block, to_hash=item.to_hash, hashes=item.hashes,
                           head=self.head, bad=item.bad, events=item.events)
        self.on_commit(Committed(item.events, len(item.bad), item.ranges))


@dataclass
class _Open:
    """The transaction the folder is filling."""

    from_block: int
    fold: Fold
    hashes: dict[int, str] = field(default_factory=dict)
    bad: list[Log] = field(default_factory=list)
    logs: int = 0
    blocks: int = 0
    ranges: list[tuple[int, int]] = field(default_factory=list)
    opened: float = field(default_factory=time.monotonic)

    def full(self, cfg: ChainConfig, last: Batch) -> bool:
        """Whether to end the transaction after `last`: at TARGET_LOGS; else at a quiet batch (few logs) once it holds
        a burst (BURST_LOGS) or has been open COMMIT_SECONDS; at the latest after LONGEST_SECONDS."""
        if self.logs >= TARGET_LOGS:
            return True
        if self.blocks < cfg.batch_blocks:
            return False
        opened = time.monotonic() - self.opened
        if len(last.logs) < QUIET_LOGS and (self.logs >= BURST_LOGS or opened >= COMMIT_SECONDS):
            return True
        return opened >= LONGEST_SECONDS


def run_pipelined(cfg: ChainConfig, batches: Iterable[Batch], *, head: int, cache: RunCache,
                  tokens_for: Callable[[Batch], TokenBook], on_commit: Callable[[Committed], None]) -> None:
    """Apply `batches` (consecutive, from the cursor on) in transactions of up to TARGET_LOGS logs, or
    `batch_blocks` blocks once open COMMIT_SECONDS. `tokens_for(batch)` gives the token book for a batch's
    orders; `on_commit` gets a `Committed` after each commit (in the writer's thread). Raises the first error
    of either side after stopping both; committed transactions stay.
    """
    chain = cfg.key
    writer = Writer(cfg, head, on_commit)
    open_: _Open | None = None
    try:
        for batch in batches:
            if open_ is None:
                open_ = _Open(batch.from_block, Fold(chain, None, orders=cache.orders,
                                                     arbitrators=cache.arbitrators, persisted=cache.persisted))
                writer.send(_Begin(batch.from_block))
            if batch.logs:  # first: PostgreSQL copies them in while this thread folds them
                writer.send("".join(line + "\n" for line in event_lines(chain, batch.logs)))
            _fold_batch(open_, batch, tokens_for(batch))
            if open_.full(cfg, batch):
                writer.send(_end(open_, batch))
                open_ = None
                if len(cache.orders) > CACHE_ORDERS:  # dropped only once written: the next fold reads them back
                    writer.wait_idle()
                    cache.clear()
            last = batch
        if open_ is not None:
            writer.send(_end(open_, last))
            open_ = None
        writer.close()
    except BaseException:
        writer.close(abort=True)
        raise
    if writer.error is not None:
        raise writer.error


def _fold_batch(open_: _Open, batch: Batch, tokens: TokenBook) -> None:
    good = [log for log in batch.logs if not log.error]
    open_.bad.extend(log for log in batch.logs if log.error)
    open_.fold.tokens = tokens
    open_.fold.add(good)
    for log in batch.logs:
        open_.hashes[log.block_number] = log.block_hash
    if batch.to_hash is not None:
        open_.hashes[batch.to_block] = batch.to_hash
    open_.logs += len(batch.logs)
    open_.blocks += batch.to_block - batch.from_block + 1
    open_.ranges.append((batch.from_block, batch.to_block))


def _end(open_: _Open, last: Batch) -> _End:
    return _End(last.to_block, last.to_hash, open_.hashes, open_.fold.finish(), open_.bad,
                open_.logs - len(open_.bad), open_.ranges)
