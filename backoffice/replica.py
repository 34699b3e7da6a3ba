"""The read replica's state: reachable or not, and how far behind the primary, measured cheaply and never raising.

Lag is measured the way an idle primary cannot fool. `now() - pg_last_xact_replay_timestamp()` on the replica
is the age of the newest transaction it replayed: it grows while the primary is idle, although the replica then
lacks nothing. So the primary's WAL position is read first (`pg_current_wal_lsn()`), then the replica's replay
position (`pg_last_wal_replay_lsn()`):

- replayed up to the primary's position or beyond: the replica holds everything the primary had when asked, the
  lag is 0 (an idle primary, or a replica that keeps up);
- short of it: the replica is behind, and its staleness is at most the age of the newest transaction it replayed,
  and at most the time since this process last saw it caught up; the lag is the smaller of the two (the second
  keeps the first write after a long idle spell from reading as an hour of lag).

A measurement is reused for CHECK_SECONDS; a failed one (replica down, unreachable, refusing) for RETRY_SECONDS, so
a dead replica costs at most one connect timeout per RETRY_SECONDS per process, not one per page. One thread
measures at a time; the others use the previous result meanwhile.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

logger = logging.getLogger(__name__)

REPLICA = "replica"  # the DATABASES alias DATABASE_REPLICA_URL configures
CHECK_SECONDS = 5.0
RETRY_SECONDS = 15.0


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
        if cached is not None and not fresh and (now < _state["expires"] or _state["checking"]):
            return cached
        if _state["checking"]:
            return cached or ReplicaStatus(configured=True, reason="first check in progress: reading the primary")
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
        with connections[DEFAULT_DB_ALIAS].cursor() as cur:  # the primary first: see the module docstring
            cur.execute("SELECT pg_current_wal_lsn()::text")
            primary_lsn = cur.fetchone()[0]
    except Exception as exc:  # the primary's own trouble shows on its health tile; the replica is not usable
        return ReplicaStatus(configured=True, reason=f"primary WAL position unavailable: {_short(exc)}")
    try:
        with connections[REPLICA].cursor() as cur:
            cur.execute(
                "SELECT pg_is_in_recovery(), "
                "(%s::pg_lsn - pg_last_wal_replay_lsn())::bigint, "
                "EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, "
                "CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END",
                [primary_lsn])
            in_recovery, behind, replay_age, paused = cur.fetchone()
    except Exception as exc:
        # A broken persistent connection must not be reused by the next check or page.
        try:
            connections[REPLICA].close()
        except Exception:
            pass
        logger.warning("database replica unreachable, reading the primary", extra={"error": _short(exc)})
        return ReplicaStatus(configured=True, reason=f"unreachable: {_short(exc)}")
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


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def wait_for_replay(timeout: float = 60.0) -> float:
    """Block until the replica has replayed everything the primary has written now; returns the seconds waited.

    For tests and benchmarks (a page a test reads from the replica must find the rows it just wrote).
    Raises TimeoutError naming both positions.
    """
    started = time.monotonic()
    with connections[DEFAULT_DB_ALIAS].cursor() as cur:
        # The insert position, not the write position: with synchronous_commit off (the embedded development
        # cluster) a commit returns before its WAL is written, and the write position can still lie before it.
        cur.execute("SELECT pg_current_wal_insert_lsn()::text")
        target = cur.fetchone()[0]
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
