"""Where dumps go and the PostgreSQL client tools: which pg_dump / pg_restore, how they connect, stop and fail."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from django.conf import settings

from .common import STOP_GRACE_SECONDS, BackupFailed

# ------------------------------------------------------------------------------------------ configuration


def backup_dir() -> tuple[Path, bool]:
    """(directory, configured): BACKUP_DIR, or .data/backups when unset (development and tests)."""
    if settings.BACKUP_DIR:
        return Path(settings.BACKUP_DIR), True
    from backoffice.devservices import DATA_DIR

    return DATA_DIR / "backups", False


def pg_binary(name: str) -> Path:
    """A PostgreSQL client binary: PG_BIN_DIR, else the pgserver wheel's (not in production), else PATH."""
    if settings.PG_BIN_DIR:
        return Path(settings.PG_BIN_DIR) / name
    if not settings.PRODUCTION:
        try:
            from backoffice.devservices import pg_bin_dir

            return pg_bin_dir() / name
        except ImportError:
            pass
    found = shutil.which(name)
    return Path(found) if found else Path(name)


# DATABASES keys that are Django's own names for libpq keywords (OPTIONS holds the rest under libpq's names).
DJANGO_LIBPQ_KEYS = {"NAME": "dbname", "USER": "user", "PASSWORD": "password", "HOST": "host", "PORT": "port"}


def _libpq_connection(db: dict) -> tuple[str, dict[str, str]]:
    """(conninfo, environment) for pg_dump / pg_restore to connect exactly as Django's own connection does.

    Every libpq keyword of the DATABASES entry goes into the conninfo passed as --dbname: NAME, USER, HOST, PORT and
    OPTIONS (sslmode, sslrootcert, target_session_attrs, application_name, ...), so that a dump is verified, and
    taken from the primary, as the web's connection is. Django-only OPTIONS (isolation_level, pool, ...) are left
    out. The password goes into PGPASSWORD, never on a command line (ps shows those). The environment's PG*
    variables stay: libpq honours them for Django's connection too.
    """
    from psycopg import pq
    from psycopg.conninfo import make_conninfo

    keywords = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
    params = {"dbname": db.get("NAME"), **(db.get("OPTIONS") or {})}
    params.update({libpq: db[key] for key, libpq in DJANGO_LIBPQ_KEYS.items() if db.get(key)})
    params = {k: str(v) for k, v in params.items() if k in keywords and v is not None and v != ""}
    env = dict(os.environ)
    if "password" in params:
        env["PGPASSWORD"] = params.pop("password")
    return make_conninfo("", **params), env


def _require_binary(name: str) -> Path:
    path = pg_binary(name)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise BackupFailed(
            f"{name} was not found or is not executable at {path}: install the PostgreSQL client binaries of the "
            f"server's major version and set PG_BIN_DIR to their directory (e.g. /usr/lib/postgresql/16/bin).")
    return path


def _explain_tool_failure(tool: str, stderr: str, returncode: int) -> str:
    """Turn pg_dump's / pg_restore's stderr into a cause and a fix."""
    last = " ".join(stderr.strip().splitlines()[-3:])[:500] or "no message"
    if "No space left on device" in stderr:
        return (f"the disk is full ({tool}: {last}): free space on the volume holding BACKUP_DIR (old dumps are "
                f"removed after BACKUP_RETENTION_DAYS) or point BACKUP_DIR at a larger one, then run again.")
    if "server version" in stderr and "mismatch" in stderr:
        return (f"{tool} is older than the database server ({last}): set PG_BIN_DIR to the client binaries of the "
                f"server's major version.")
    if "LOCK TABLE" in stderr and ("statement timeout" in stderr or "lock timeout" in stderr):
        return _lock_wait_message(f"{tool}: {last}")
    if "could not connect" in stderr or "connection to server" in stderr:
        return f"{tool} could not connect to the database ({last}): check DATABASE_URL and that the server is up."
    if "input file is too short" in stderr or "unexpected end of file" in stderr or "could not read" in stderr:
        return (f"{tool} found the dump truncated ({last}): the file is incomplete; restore an older good backup "
                f"and find out why it was cut short (disk, copy, retention).")
    return f"{tool} exited with status {returncode}: {last}"


def _lock_wait_message(detail: str) -> str:
    return (f"a table stayed locked longer than BACKUP_LOCK_WAIT_SECONDS ({settings.BACKUP_LOCK_WAIT_SECONDS} s) "
            f"({detail}): find the session holding it (SELECT pid, state, query FROM pg_stat_activity WHERE pid = "
            f"ANY(pg_blocking_pids(...))), let it finish or end it, then run manage.py backup_database again.")


def _timeout_message(tool: str) -> str:
    return (f"{tool} ran longer than BACKUP_TIMEOUT_SECONDS ({settings.BACKUP_TIMEOUT_SECONDS} s) and was stopped: "
            f"find what slowed it (the server's load, the network, the disk of BACKUP_DIR) and run it again; raise "
            f"BACKUP_TIMEOUT_SECONDS if the database has outgrown it.")


@contextmanager
def _deadline(proc: subprocess.Popen, seconds: float) -> Iterator[threading.Event]:
    """Stop `proc` and its process group (pg_restore's parallel workers) once it has run `seconds`: SIGTERM first,
    so that pg_dump / pg_restore cancel their queries on the server, then SIGKILL. The event says it was stopped."""
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if proc.poll() is not None:
                return
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                continue

    timer = threading.Timer(seconds, stop)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()
