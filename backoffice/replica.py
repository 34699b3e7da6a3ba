"""The read replica's state: reachable or not, and how far behind the primary, measured cheaply and never raising.

Lag is measured the way an idle primary cannot fool. `now() - pg_last_xact_replay_timestamp()` on the replica
is the age of the newest transaction it replayed: it grows while the primary is idle, although the replica then
lacks nothing. So the primary's WAL position is read first, then the replica's replay position
(`pg_last_wal_replay_lsn()`):

- replayed up to the primary's position or beyond: the replica holds everything the primary had when asked, the
  lag is 0 (an idle primary, or a replica that keeps up);
- short of it: the replica is behind, and its staleness is at most the age of the newest transaction it replayed,
  and at most the time since this process last saw it caught up; the lag is the smaller of the two (the second
  keeps the first write after a long idle spell from reading as an hour of lag). A replica behind that has
  neither (freshly started, no transaction replayed, never seen caught up here) has an unknown lag and is not
  used: a few bytes behind may be a commit as well as the server's own background records, so it waits for a
  check that finds it caught up, which on a streaming replica is the next one.

The primary's position is its WAL *insert* position (`pg_current_wal_insert_lsn()`), not the write position: with
synchronous_commit off a commit returns before its WAL is written, and the write position can lie before it, so
a replica lacking a committed transaction would read as caught up. The insert position of a server whose last
record ended at a WAL page boundary points past the next page's header, where no replica's replay position can
be; it is taken back to the boundary (`_primary_wal_end`), or an idle primary would look a few bytes ahead until
its next record (a fresh replica after pg_basebackup's WAL switch, for one).

A measurement is reused for CHECK_SECONDS; a failed one (replica down, unreachable, refusing) for RETRY_SECONDS, so
a dead replica costs at most one connect timeout per RETRY_SECONDS per process, not one per page. The lag limit is
therefore approximate: a page may read a replica whose lag grew past DATABASE_REPLICA_MAX_LAG_SECONDS up to
CHECK_SECONDS ago.

One thread measures at a time. Once the last measurement has expired, the others do not use it while that thread
asks again: the replica may have stopped answering since, and every page sent to it would hang with the check
(a hung replica must cost the web tier one thread per process for a few seconds, not all of them). They read the
primary until the check ends, which is bounded: the connection is opened within its connect_timeout, and a
replica that does not answer on an open connection within CHECK_TIMEOUT_SECONDS has its socket shut down
(`_hang_up_after`) and counts as unreachable. Pages already reading the replica when it hangs are bounded by the
connection's own timeouts (keepalives, tcp_user_timeout, statement_timeout: backoffice.database_url).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

REPLICA = "replica"  # the DATABASES alias DATABASE_REPLICA_URL configures
CHECK_SECONDS = 5.0
RETRY_SECONDS = 15.0
CHECK_TIMEOUT_SECONDS = 2.0  # for the replica's answer on an open connection (the check's query takes milliseconds)


@dataclass(frozen=True)
class ReplicaStatus:
    configured: bool
    reachable: bool = False  # answered, and is a standby in recovery
    lag_seconds: float | None = None  # None: not measurable (unreachable, or nothing replayed yet)
    behind_bytes: int | None = None  # WAL the primary has and the replica has not replayed
    replay_paused: bool = False
    usable: bool = False  # pages may read from it now
    reason: str = ""  # why it is not used, in words staff can act on


NOT_CONFIGURED = ReplicaStatus(configured=False, reason="DATABASE_REPLICA_URL is not set")

_lock = threading.Lock()
_state: dict = {"status": None, "expires": 0.0, "checking": False, "caught_up_at": None}


def configured() -> bool:
    """True when a `replica` database alias exists (DATABASE_REPLICA_URL, or a test's replica fixture)."""
    return REPLICA in connections.settings


def replica_status(*, fresh: bool = False) -> ReplicaStatus:
    """The replica's state, measured at most every CHECK_SECONDS (RETRY_SECONDS after a failure) per process."""
    if not configured():
        return NOT_CONFIGURED
    now = time.monotonic()
    with _lock:
        cached = _state["status"]
        if cached is not None and not fresh and now < _state["expires"]:
            return cached
        if _state["checking"]:  # expired, and another thread is asking again: see the module docstring
            return _while_checking(cached)
        _state["checking"] = True
    status = None
    try:
        status = _measure()
    finally:
        with _lock:
            if status is not None:
                _state["status"] = status
                _state["expires"] = time.monotonic() + (CHECK_SECONDS if status.reachable else RETRY_SECONDS)
            _state["checking"] = False
    return status


def _while_checking(cached: ReplicaStatus | None) -> ReplicaStatus:
    if cached is None:
        return ReplicaStatus(configured=True, reason="first check in progress: reading the primary")
    if not cached.usable:
        return cached
    return dataclasses.replace(cached, usable=False, reason=f"last check over {CHECK_SECONDS:g} s old and the next one "
                                                            "not answered yet: reading the primary meanwhile")


def mark_failed(reason: str) -> None:
    """A query on the replica failed mid-page: read the primary until the next check (RETRY_SECONDS)."""
    with _lock:
        _state["status"] = ReplicaStatus(configured=True, reason=reason)
        _state["expires"] = time.monotonic() + RETRY_SECONDS


def reset() -> None:
    """Forget the last measurement (tests, and after reconfiguring the alias)."""
    with _lock:
        _state.update(status=None, expires=0.0, checking=False, caught_up_at=None)


def _measure() -> ReplicaStatus:
    max_lag = float(settings.DATABASE_REPLICA_MAX_LAG_SECONDS)
    try:
        primary_lsn = _primary_wal_end()  # the primary first: see the module docstring
    except Exception as exc:  # the primary's own trouble shows on its health tile; the replica is not usable
        return ReplicaStatus(configured=True, reason=f"primary WAL position unavailable: {_short(exc)}")
    conn = connections[REPLICA]
    hung = threading.Event()
    row = error = None
    try:
        with _hang_up_after(CHECK_TIMEOUT_SECONDS, conn, hung):
            conn.close_if_health_check_failed()  # Django's SELECT 1 on a kept connection (CONN_HEALTH_CHECKS)
        if not hung.is_set():
            conn.ensure_connection()  # a new connection: within its connect_timeout
            with _hang_up_after(CHECK_TIMEOUT_SECONDS, conn, hung), conn.cursor() as cur:
                cur.execute(
                    "SELECT pg_is_in_recovery(), "
                    "(%s::pg_lsn - pg_last_wal_replay_lsn())::bigint, "
                    "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, "
                    "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
                    [primary_lsn])
                row = cur.fetchone()
    except Exception as exc:
        error = exc
    if hung.is_set() or row is None:
        # A broken (or hung up) persistent connection must not be reused by the next check or page.
        try:
            conn.close()
        except Exception:
            pass
        problem = f"did not answer within {CHECK_TIMEOUT_SECONDS:g} s" if hung.is_set() else _short(error)
        logger.warning("database replica unreachable, reading the primary", extra={"error": problem})
        return ReplicaStatus(configured=True, reason=f"unreachable: {problem}")
    in_recovery, behind, replay_age, paused = row
    if not in_recovery:
        # A promoted former replica has its own history from the promotion on: never read it as a copy.
        return ReplicaStatus(configured=True, reason="not a standby (pg_is_in_recovery() is false): promoted, or "
                                                     "DATABASE_REPLICA_URL names a primary")
    wall = time.time()
    if behind is not None and behind <= 0:
        _state["caught_up_at"] = wall
        lag = 0.0
    else:
        bounds = [b for b in (replay_age, None if _state["caught_up_at"] is None else wall - _state["caught_up_at"])
                  if b is not None]
        lag = max(0.0, min(bounds)) if bounds else None
    common = {"configured": True, "reachable": True, "lag_seconds": lag, "replay_paused": bool(paused),
              "behind_bytes": max(int(behind or 0), 0)}
    if lag is None:
        return ReplicaStatus(**common, reason="lag unknown: the replica has replayed no transaction yet")
    if lag > max_lag:
        return ReplicaStatus(**common, reason=f"lag {lag:.1f} s over DATABASE_REPLICA_MAX_LAG_SECONDS={max_lag:g}")
    return ReplicaStatus(**common, usable=True)


@contextlib.contextmanager
def _hang_up_after(seconds: float, conn, hung: threading.Event) -> Iterator[None]:
    """Shut the socket of `conn`'s open connection down (and set `hung`) if the block has not ended within `seconds`.

    libpq then fails the query at once, where a replica that hangs on an open connection would hold the thread
    until TCP gives up, or forever when something still acknowledges the packets. The socket is reached through a
    duplicate of its descriptor: a connection closed meanwhile cannot make this touch another one's.
    """
    raw = conn.connection
    if raw is None or raw.closed:
        yield  # nothing open: a connect has its own timeout
        return
    sock = socket.socket(fileno=os.dup(raw.fileno()))

    def hang_up() -> None:
        hung.set()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    timer = threading.Timer(seconds, hang_up)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        timer.join()
        sock.close()


# WAL page headers (PostgreSQL's SizeOfXLogShortPHD, and SizeOfXLogLongPHD on a segment's first page, on a 64-bit
# server): the insert position skips them before the next record.
_SHORT_PAGE_HEADER, _LONG_PAGE_HEADER = 24, 40


def _primary_wal_end() -> str:
    """The end of the last WAL record the primary inserted (committed or not yet written), as LSN text."""
    with connections[DEFAULT_DB_ALIAS].cursor() as cur:
        cur.execute("SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size')::int, "
                    "pg_size_bytes(current_setting('wal_segment_size'))")
        insert, block, segment = cur.fetchone()
    high, low = insert.split("/")
    position = (int(high, 16) << 32) | int(low, 16)
    if position % segment == _LONG_PAGE_HEADER:
        position -= _LONG_PAGE_HEADER
    elif position % block == _SHORT_PAGE_HEADER:
        position -= _SHORT_PAGE_HEADER
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def wait_for_replay(timeout: float = 60.0) -> float:
    """Block until the replica has replayed everything the primary has written now; returns the seconds waited.

    For tests and benchmarks (a page a test reads from the replica must find the rows it just wrote).
    Raises TimeoutError naming both positions.
    """
    started = time.monotonic()
    # The insert position, not the write position (see the module docstring): with synchronous_commit off (the
    # embedded development cluster) a commit returns before its WAL is written.
    target = _primary_wal_end()
    while True:
        with connections[REPLICA].cursor() as cur:
            cur.execute("SELECT pg_last_wal_replay_lsn()::text, pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])
            replayed, done = cur.fetchone()
        if done:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the replica replayed WAL up to {replayed}, the primary is at {target}: "
                               f"not caught up after {timeout:g} s")
        time.sleep(0.05)
