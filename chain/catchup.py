"""A catch-up's progress: blocks done of blocks to go, events so far, the current rate and an estimated finish, for
the Sync cursors page, the sync's logs and /metrics. Kept in chain_sync_catchup, written in the transactions that
move the cursor, so it is exactly what was committed and carries over from one sync run to the next."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import connection, transaction
from django.utils import timezone

from .models import SyncCatchup

logger = logging.getLogger(__name__)

MIN_BLOCKS = 1_000  # a run starting further behind than this begins a catch-up
SHOW_AFTER_SECONDS = 60.0  # a catch-up that has lasted, or is expected to last, this long is shown and logged
RATE_SECONDS = 10.0  # the current rate is measured over about this long (the first figure after one second)
LOG_EVERY_SECONDS = 30.0
_logged: dict[str, float] = {}  # chain → time.monotonic() of this process's last progress line


@dataclass(frozen=True)
class Progress:
    chain: str
    started_at: datetime
    updated_at: datetime
    from_block: int
    target_block: int
    last_block: int
    events: int
    blocks_per_second: float | None
    events_per_second: float | None
    in_flight: int | None = None
    finished_at: datetime | None = None

    @classmethod
    def of(cls, row: SyncCatchup) -> "Progress":
        return cls(row.chain, row.started_at, row.updated_at, row.from_block, row.target_block, row.last_block,
                   row.events, row.blocks_per_second, row.events_per_second, row.in_flight, row.finished_at)

    @property
    def blocks_done(self) -> int:
        return max(0, self.last_block - self.from_block)

    @property
    def blocks_total(self) -> int:
        return max(1, self.target_block - self.from_block)

    @property
    def rate(self) -> float | None:
        """Blocks per second: the current rate, or the average so far before there is one."""
        if self.blocks_per_second:
            return self.blocks_per_second
        elapsed = (self.updated_at - self.started_at).total_seconds()
        return self.blocks_done / elapsed if elapsed > 0 and self.blocks_done else None

    @property
    def eta_seconds(self) -> float | None:
        if self.finished_at is not None:
            return 0.0
        rate = self.rate
        return max(0, self.target_block - self.last_block) / rate if rate else None

    @property
    def finish_at(self) -> datetime | None:
        eta = self.eta_seconds
        return None if eta is None else self.updated_at + timedelta(seconds=eta)

    def is_long(self, now: datetime | None = None) -> bool:
        """Lasted, or is expected to last, SHOW_AFTER_SECONDS: worth showing and logging."""
        now = now or timezone.now()
        if (now - self.started_at).total_seconds() >= SHOW_AFTER_SECONDS:
            return True
        eta = self.eta_seconds
        return eta is not None and (self.updated_at - self.started_at).total_seconds() + eta >= SHOW_AFTER_SECONDS

    def describe(self) -> str:
        """One line for people: '61.7 % (1,234,567 of 2,000,000 blocks), 31,200 events; 45,210 blocks/s, …'."""
        parts = [f"{100 * self.blocks_done / self.blocks_total:.1f} % ({self.blocks_done:,} of "
                 f"{self.blocks_total:,} blocks, to {self.target_block:,}), {self.events:,} events"]
        rate = self.rate
        if rate:
            per_second = f"{rate:,.0f} blocks/s"
            if self.events_per_second is not None:
                per_second += f", {self.events_per_second:,.0f} events/s"
            parts.append(per_second)
        if self.finished_at is not None:
            parts.append(f"caught up at {self.finished_at:%H:%M:%S} UTC")
        elif self.finish_at is not None:
            parts.append(f"done in about {_duration(self.eta_seconds)} ({self.finish_at:%H:%M:%S} UTC)")
        if self.in_flight:
            parts.append(f"{self.in_flight} eth_getLogs in flight")
        return "; ".join(parts)


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def current(chain: str) -> Progress | None:
    """The chain's catch-up in progress, or None."""
    row = SyncCatchup.objects.filter(chain=chain, finished_at__isnull=True).first()
    return Progress.of(row) if row else None


def in_progress() -> list[Progress]:
    """Every chain's catch-up in progress."""
    return [Progress.of(row) for row in SyncCatchup.objects.filter(finished_at__isnull=True)]


def begin(chain: str, *, cursor_block: int, target: int, in_flight: int) -> None:
    """At the start of a sync run: one starting more than MIN_BLOCKS behind begins a catch-up (a cursor moved back
    below the open one's start begins it again); any other goes on with the open one, whose target follows the
    head."""
    now = timezone.now()
    row = SyncCatchup.objects.filter(chain=chain).first()
    if row is not None and row.finished_at is None and cursor_block >= row.from_block:
        SyncCatchup.objects.filter(chain=chain).update(target_block=max(target, row.target_block),
                                                       in_flight=in_flight, updated_at=now)
        return
    if target - cursor_block <= MIN_BLOCKS:
        if row is not None and row.finished_at is None:  # moved back, but only a little: nothing to catch up
            SyncCatchup.objects.filter(chain=chain).update(finished_at=now)
        return
    SyncCatchup.objects.update_or_create(chain=chain, defaults={
        "started_at": now, "updated_at": now, "from_block": cursor_block, "target_block": target,
        "last_block": cursor_block, "events": 0, "blocks_per_second": None, "events_per_second": None,
        "mark_at": now, "mark_block": cursor_block, "mark_events": 0, "in_flight": in_flight, "finished_at": None})
    _logged[chain] = time.monotonic()
    logger.info("sync %s catching up: %s blocks behind (blocks %s to %s)", chain, f"{target - cursor_block:,}",
                f"{cursor_block + 1:,}", f"{target:,}", extra={"chain": chain, "catchup_blocks": target - cursor_block})


_ADVANCE = """
UPDATE chain_sync_catchup SET
    last_block = %(to)s, events = events + %(events)s, updated_at = %(now)s,
    blocks_per_second = CASE WHEN {due} THEN (%(to)s - mark_block) / EXTRACT(EPOCH FROM %(now)s - mark_at)
                        ELSE blocks_per_second END,
    events_per_second = CASE WHEN {due} THEN (events + %(events)s - mark_events) / EXTRACT(EPOCH FROM %(now)s - mark_at)
                        ELSE events_per_second END,
    mark_block = CASE WHEN {due} THEN %(to)s ELSE mark_block END,
    mark_events = CASE WHEN {due} THEN events + %(events)s ELSE mark_events END,
    mark_at = CASE WHEN {due} THEN %(now)s ELSE mark_at END
WHERE chain = %(chain)s AND finished_at IS NULL
RETURNING started_at, updated_at, from_block, target_block, last_block, events, blocks_per_second, events_per_second,
          in_flight
""".format(due="(%(now)s - mark_at >= %(window)s OR (blocks_per_second IS NULL AND %(now)s - mark_at >= %(first)s))")


def advance(chain: str, *, to_block: int, events: int) -> None:
    """Inside the transaction that moves the cursor to `to_block`, having applied `events`: the open catch-up's
    progress and current rate (one statement; nothing when no catch-up is open). Once the transaction commits, a
    progress line in the logs every LOG_EVERY_SECONDS while the catch-up is a long one."""
    with connection.cursor() as cur:
        cur.execute(_ADVANCE, {"chain": chain, "to": to_block, "events": events, "now": timezone.now(),
                               "window": timedelta(seconds=RATE_SECONDS), "first": timedelta(seconds=1)})
        row = cur.fetchone()
    if row is None:
        return
    progress = Progress(chain, *row)
    if time.monotonic() - _logged.get(chain, 0.0) >= LOG_EVERY_SECONDS and progress.is_long():
        _logged[chain] = time.monotonic()
        transaction.on_commit(lambda: _log(progress))


def end_run(chain: str, *, reached: bool, in_flight: int) -> None:
    """At the end of a sync run: the window it kept; when it reached its target, the catch-up is over."""
    row = SyncCatchup.objects.filter(chain=chain, finished_at__isnull=True).first()
    if row is None:
        return
    row.in_flight, fields = in_flight, ["in_flight"]
    if reached:
        row.finished_at = timezone.now()
        fields.append("finished_at")
    row.save(update_fields=fields)
    progress = Progress.of(row)
    if reached and progress.is_long(row.finished_at):
        elapsed = (row.finished_at - row.started_at).total_seconds()
        logger.info("sync %s caught up: %s blocks and %s events in %s", chain, f"{progress.blocks_done:,}",
                    f"{row.events:,}", _duration(elapsed), extra={"chain": chain, "catchup_seconds": round(elapsed, 1)})


def _log(progress: Progress) -> None:
    logger.info("sync %s catching up: %s", progress.chain, progress.describe(), extra={
        "chain": progress.chain, "catchup_blocks_done": progress.blocks_done,
        "catchup_blocks_total": progress.blocks_total, "catchup_events": progress.events,
        "catchup_eta_seconds": None if progress.eta_seconds is None else round(progress.eta_seconds)})
