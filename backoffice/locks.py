"""A session-level PostgreSQL advisory lock taken without waiting: one run of a job at a time across every worker
and beat process. It lives on the database connection, so a killed worker's lock dies with its connection."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import connection


@contextlib.contextmanager
def try_advisory_lock(name: str) -> Iterator[bool]:
    """Yields whether the lock `name` was free (and is now held until the block ends); never waits for it."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [name])
        got = cur.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(Exception), connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", [name])
