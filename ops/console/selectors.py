"""Reads for the console pages: database activity (runbook RB-02: connections by state, the longest queries, idle
connections).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# RB-02 step 3's connections, on this database: idle for longer than %s seconds, never the asking connection.
IDLE_LONG = ("datname = current_database() AND state = 'idle' AND state_change < clock_timestamp() - "
             "make_interval(secs => %s) AND pid <> pg_backend_pid()")


@dataclass(frozen=True)
class DatabaseActivity:
    by_state: list[tuple[str, int]]      # RB-02 step 1: connections by state
    running: list[dict[str, Any]]        # step 2: the ten longest non-idle queries
    idle_long: list[dict[str, Any]]      # step 3: what "end idle connections" would end
    max_connections: int


def database_activity(*, idle_seconds: int = 600) -> DatabaseActivity:
    """The runbook's RB-02 queries on this back office's own database (never another's), this page's own
    connection left out."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT COALESCE(state, 'background'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC")
        by_state = cur.fetchall()
        cur.execute("SELECT pid, EXTRACT(EPOCH FROM clock_timestamp() - query_start), state, left(query, 120), "
                    "application_name, wait_event_type FROM pg_stat_activity WHERE datname = current_database() "
                    "AND state <> 'idle' AND pid <> pg_backend_pid() ORDER BY query_start LIMIT 10")
        running = [dict(zip(("pid", "seconds", "state", "query", "application", "waiting_on"), row, strict=True))
                   for row in cur.fetchall()]
        cur.execute("SELECT pid, EXTRACT(EPOCH FROM clock_timestamp() - state_change), application_name, "
                    f"client_addr::text FROM pg_stat_activity WHERE {IDLE_LONG} ORDER BY state_change", [idle_seconds])
        idle_long = [dict(zip(("pid", "seconds", "application", "client"), row, strict=True)) for row in cur.fetchall()]
        cur.execute("SELECT current_setting('max_connections')::int")
        (max_connections,) = cur.fetchone()
    return DatabaseActivity(by_state, running, idle_long, max_connections)
