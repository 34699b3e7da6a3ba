"""What the backup and the restore test share: their constants, BackupFailed, the advisory locks, the actor's label."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import DatabaseError, connection

from backoffice.audit.services import actor_label

# The name of the single module this package was: log records (and any logging configuration) keep it.
logger = logging.getLogger("ops.backups")

# The tables a restore must bring back whole: the mirror's orders and the records the marketplace can least
# afford to lose (the audit log, the owner's contract actions, the blacklist). Label → table.
KEY_TABLES = {"orders": "orders", "audit_log": "audit_log", "contract_actions": "ops_contract_actions",
              "blacklist": "blacklist"}
# Session-level advisory locks: one backup and one restore test at a time across every worker and command. A
# killed process's lock dies with its connection, so a crash never blocks the next run.
BACKUP_LOCK_KEY = 0x5A0D18
RESTORE_LOCK_KEY = 0x5A0D19
CHUNK = 1 << 20
PARTIAL_SUFFIX = ".partial"
DUMP_MAGIC = b"PGDMP"  # the first bytes of every custom-format archive
RESTORE_ALIAS = "restore_test"
# A queued restore test whose task was lost stops blocking new requests after this long.
QUEUED_TEST_EXPIRES = timedelta(hours=2)
# A backup still running this long after BACKUP_TIMEOUT_SECONDS is stuck outside pg_dump (whose deadline has passed):
# a run refused because of it raises an alert instead of only being refused.
STUCK_GRACE = timedelta(minutes=15)
# A stopped pg_dump / pg_restore gets this long to cancel its queries (its SIGTERM handler does) before SIGKILL.
STOP_GRACE_SECONDS = 10
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATEs: a lock_timeout, a missing privilege
INSUFFICIENT_PRIVILEGE = "42501"


class BackupFailed(Exception):
    """A step of a backup or a restore test failed; the message names the cause and the fix."""


def _try_lock(key: int) -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        return bool(cur.fetchone()[0])


def _unlock(key: int) -> None:
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [key])
    except DatabaseError:
        connection.close()  # a broken connection has released its session locks already


def _label(actor: Any) -> str:
    return actor_label(actor)[:150]


def _user(actor: Any) -> AbstractBaseUser | None:
    return actor if isinstance(actor, AbstractBaseUser) else None
