"""Backups of the back office database (`pg_dump -Fc`) and restore tests proving that a backup comes back whole.

Services: `run_backup`, `prune_backups`, `request_restore_test`, `run_restore_test`, `record_backup_download`.
Each writes its audit row in its own transaction; alerts are raised after that transaction commits.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from django.db.migrations.loader import MigrationLoader
from django.db.models import Q
from django.db.utils import load_backend
from django.utils import timezone

from backoffice.alerts.services import raise_alert
from backoffice.audit.selectors import verify_audit_chain
from backoffice.audit.services import actor_label, record_audit
from backoffice.permissions import require_perm

from .models import BackupRun, BackupStatus, BackupTrigger, RestoreTest, RestoreTestStatus

logger = logging.getLogger(__name__)

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


# ------------------------------------------------------------------------------------------ backup


def open_partial_file(path: Path) -> BinaryIO:
    """Create the dump's temporary file: exclusive (never overwrites) and readable by this user only (a dump holds
    every record of the marketplace). Tests replace this function to inject a fault."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def run_backup(*, actor: Any, trigger: str = BackupTrigger.SCHEDULE) -> BackupRun:
    """Dump the database into BACKUP_DIR and record the run; then apply retention.

    Refused (ValidationError, nothing written) while another backup runs. Every fault ends in a failed run
    whose `error` names the cause and the fix, a P2 alert, and no file that looks like a good backup: the
    dump is written under a hidden `.partial` name, fsynced, and renamed only when complete.
    Must run outside a transaction: the row counts and the dump share one exported snapshot.
    """
    if connection.in_atomic_block:
        raise RuntimeError("run_backup exports its own snapshot: call it outside a transaction")
    if not _try_lock(BACKUP_LOCK_KEY):
        running = BackupRun.objects.filter(status=BackupStatus.RUNNING).order_by("-started_at").first()
        since = f" (#{running.pk}, started {running.started_at:%Y-%m-%d %H:%M} UTC by {running.actor_label})" \
            if running else ""
        logger.warning("backup by %s refused: another is running%s", _label(actor), since)
        if running is not None and _is_stuck(running):
            raise_alert(key="backup-stuck", severity="P2", source="backup_database",
                        title=f"Database backup #{running.pk} is stuck; backups are refused meanwhile",
                        message=f"Backup #{running.pk} has been running since {running.started_at:%Y-%m-%d %H:%M} "
                                f"UTC, longer than BACKUP_TIMEOUT_SECONDS allows, and holds the backup lock: "
                                f"{_label(actor)} was refused. Find the worker or command running it (pg_stat_activity "
                                f"shows its session waiting or idle in transaction) and stop it; the next run marks "
                                f"it interrupted.")
        raise ValidationError(f"A backup is already running{since}: one runs at a time; wait for it to finish "
                              f"and see its result on the Backups page.")
    try:
        _fail_interrupted_runs(actor=actor)
        run = BackupRun.objects.create(started_at=timezone.now(), trigger=trigger, actor_label=_label(actor))
        started = time.monotonic()
        try:
            _dump(run)
        except BackupFailed as exc:
            return _fail_backup(run, actor=actor, error=str(exc), started=started)
        except Exception as exc:
            logger.exception("backup #%s failed unexpectedly", run.pk)
            return _fail_backup(run, actor=actor, started=started,
                                error=f"unexpected error {exc.__class__.__name__}: {exc}; see the worker's log "
                                      f"for the traceback, fix the cause and run manage.py backup_database again.")
        run.status, run.finished_at = BackupStatus.OK, timezone.now()
        run.duration_seconds = round(time.monotonic() - started, 3)
        try:
            with transaction.atomic():
                run.save()
                record_audit(actor=actor, action="backup_database", obj=run,
                             after={"status": run.status, "file": run.file_path, "sha256": run.sha256,
                                    "size_bytes": run.size_bytes, "row_counts": run.row_counts})
        except Exception as exc:
            # A dump no good run vouches for must not lie in BACKUP_DIR looking like one.
            Path(run.file_path).unlink(missing_ok=True)
            logger.exception("backup #%s could not be recorded", run.pk)
            return _fail_backup(run, actor=actor, started=started,
                                error=f"the dump was written but recording it failed ({exc.__class__.__name__}: "
                                      f"{exc}); the file was removed: check the database and run manage.py "
                                      f"backup_database again.")
        logger.info("backup #%s written: %s (%s bytes)", run.pk, run.file_path, run.size_bytes)
        try:
            prune_backups(actor=actor)
        except OSError as exc:  # the new backup is good; only the old files stay
            logger.exception("retention after backup #%s failed", run.pk)
            raise_alert(key="backup-retention", severity="P3", source="backup_database",
                        title="Old backups could not be removed",
                        message=f"{exc}: give this user write permission on BACKUP_DIR, or remove them by hand.")
        return run
    finally:
        _unlock(BACKUP_LOCK_KEY)


def _is_stuck(run: BackupRun) -> bool:
    return timezone.now() - run.started_at > timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS) + STUCK_GRACE


def _fail_backup(run: BackupRun, *, actor: Any, error: str, started: float) -> BackupRun:
    run.status, run.error, run.finished_at = BackupStatus.FAILED, error, timezone.now()
    run.duration_seconds = round(time.monotonic() - started, 3)
    run.file_path, run.sha256, run.size_bytes = "", "", None
    with transaction.atomic():
        run.save()
        record_audit(actor=actor, action="backup_database", obj=run, after={"status": run.status}, reason=error)
    logger.error("backup #%s failed: %s", run.pk, error)
    raise_alert(key="backup-failed", severity="P2", source="backup_database",
                title=f"Database backup #{run.pk} failed", message=error)
    return run


def _fail_interrupted_runs(*, actor: Any) -> None:
    """Under the backup lock nothing dumps this database: a 'running' row or a `.partial` file of this database is
    a dead run's debris. Another database's partial files (a second installation sharing BACKUP_DIR) are its own."""
    directory, _ = backup_dir()
    if directory.is_dir():
        ours = re.compile(rf"\.{re.escape(connection.settings_dict['NAME'])}-\d{{8}}T\d{{6}}Z-\d+\.dump"
                          rf"{re.escape(PARTIAL_SUFFIX)}")
        for stray in directory.iterdir():
            if ours.fullmatch(stray.name):
                stray.unlink(missing_ok=True)
    for run in BackupRun.objects.filter(status=BackupStatus.RUNNING):
        error = ("interrupted: the process running it stopped before it finished (worker killed or restarted); "
                 "its partial file was removed. The next scheduled backup runs as usual.")
        with transaction.atomic():
            BackupRun.objects.filter(pk=run.pk).update(status=BackupStatus.FAILED, error=error,
                                                       finished_at=timezone.now())
            record_audit(actor=actor, action="backup_database", obj=run, after={"status": "failed"}, reason=error)


def _check_directory() -> Path:
    directory, configured = backup_dir()
    if not directory.exists():
        if configured:
            raise BackupFailed(f"BACKUP_DIR {directory} does not exist: mount the backup volume there or create the "
                               f"directory (writable by this user), or set BACKUP_DIR to an existing directory.")
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.is_dir():
        raise BackupFailed(f"BACKUP_DIR {directory} is not a directory: set BACKUP_DIR to a directory.")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise BackupFailed(f"BACKUP_DIR {directory} is not writable by this user (uid {os.geteuid()}): give it "
                           f"write permission (chown/chmod) or set BACKUP_DIR to a writable directory.")
    return directory


def _snapshot_facts(cur) -> tuple[dict[str, int], dict[str, str]]:
    counts = {}
    for label, table in KEY_TABLES.items():
        cur.execute(f'SELECT count(*) FROM "{table}"')
        counts[label] = cur.fetchone()[0]
    cur.execute("SELECT app, max(name) FROM django_migrations GROUP BY app ORDER BY app")
    return counts, dict(cur.fetchall())


def _dump(run: BackupRun) -> None:
    """pg_dump into a hidden temporary file, hashing as it streams; fsync; commit the snapshot's transaction;
    rename. Fills in the run's figures. Any fault removes the file: none is left that no good run vouches for."""
    directory = _check_directory()
    pg_dump = _require_binary("pg_dump")
    db = connection.settings_dict
    final = directory / f"{db['NAME']}-{run.started_at:%Y%m%dT%H%M%SZ}-{run.pk}.dump"
    partial = directory / f".{final.name}{PARTIAL_SUFFIX}"
    version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    dumped = False
    try:
        try:
            # One REPEATABLE READ transaction exports the snapshot pg_dump reads, so the recorded row counts are
            # those of the dump itself, whatever the sync writes meanwhile. It stays open, idle, until pg_dump has
            # finished: the server's idle_in_transaction_session_timeout and statement_timeout must not end it.
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                cur.execute("SET LOCAL statement_timeout = 0")
                # The counts wait for a locked table no longer than pg_dump does (--lock-wait-timeout).
                cur.execute("SELECT set_config('lock_timeout', %s, true)", [f"{settings.BACKUP_LOCK_WAIT_SECONDS}s"])
                cur.execute("SELECT pg_export_snapshot()")
                snapshot = cur.fetchone()[0]
                counts, schema = _snapshot_facts(cur)
                size, sha256 = _pg_dump_into(partial, pg_dump=pg_dump, snapshot=snapshot, db=db)
                dumped = True
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                raise BackupFailed(_lock_wait_message(str(exc).strip())) from exc
            if not dumped:
                raise
            raise BackupFailed(
                f"the database connection holding the dump's snapshot failed before the backup was recorded ({exc}): "
                f"the dump was discarded; check the server's log (a restart, a dropped connection, a session "
                f"timeout) and run manage.py backup_database again.") from exc
        # Renamed only now: a complete-looking file exists only once nothing before it can fail.
        os.rename(partial, final)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    try:
        _fsync_dir(directory)  # the rename itself must survive a crash
    except BaseException:
        final.unlink(missing_ok=True)
        raise
    run.file_path, run.size_bytes, run.sha256 = str(final), size, sha256
    run.row_counts, run.schema_version, run.pg_dump_version = counts, schema, version[:100]


def _pg_dump_into(partial: Path, *, pg_dump: Path, snapshot: str, db: dict) -> tuple[int, str]:
    """Stream pg_dump's archive of `snapshot` into `partial`, fsynced; (size, SHA-256). Raises BackupFailed."""
    digest, size = hashlib.sha256(), 0
    with tempfile.TemporaryFile() as stderr:
        conninfo, env = _libpq_connection(db)
        proc = subprocess.Popen([str(pg_dump), "--format=custom", f"--snapshot={snapshot}", "--no-password",
                                 f"--lock-wait-timeout={settings.BACKUP_LOCK_WAIT_SECONDS * 1000}",
                                 f"--dbname={conninfo}"],
                                stdout=subprocess.PIPE, stderr=stderr, env=env, start_new_session=True)
        with _deadline(proc, settings.BACKUP_TIMEOUT_SECONDS) as expired:
            try:
                with open_partial_file(partial) as out:
                    while chunk := proc.stdout.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                proc.kill()
                if exc.errno == errno.ENOSPC:
                    raise BackupFailed(
                        f"the disk is full: writing {partial.name} failed ({exc.strerror}); free space on the volume "
                        f"holding BACKUP_DIR ({partial.parent}) or point BACKUP_DIR at a larger one, then run "
                        f"manage.py backup_database again.") from exc
                raise BackupFailed(f"writing {partial} failed ({exc.strerror}): check BACKUP_DIR "
                                   f"({partial.parent}) and its volume, then run again.") from exc
            finally:
                proc.stdout.close()
                returncode = proc.wait()
        if expired.is_set():
            raise BackupFailed(_timeout_message("pg_dump"))
        if returncode != 0:
            stderr.seek(0)
            raise BackupFailed(_explain_tool_failure("pg_dump", stderr.read().decode(errors="replace"), returncode))
    with open(partial, "rb") as check:
        magic = check.read(len(DUMP_MAGIC))
    if magic != DUMP_MAGIC:
        raise BackupFailed(f"pg_dump ({pg_dump}) wrote {size} bytes that are not a custom-format archive: check "
                           f"that PG_BIN_DIR holds PostgreSQL's own pg_dump.")
    return size, digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_backups(*, actor: Any, now: datetime | None = None) -> list[int]:
    """Remove the files of good backups older than BACKUP_RETENTION_DAYS (audited). Never removed: the newest good
    one, and the backup of the newest passed restore test with every good one after it (while newer backups fail
    their restore tests, the last one proven to restore must stay).

    The row stays, with `file_deleted_at`: the history of backups is kept, only the dumps go.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.BACKUP_RETENTION_DAYS)
    newest = BackupRun.objects.good().order_by("-finished_at", "-id").values_list("pk", flat=True).first()
    candidates = BackupRun.objects.good().filter(finished_at__lt=cutoff).exclude(pk=newest)
    proven = (RestoreTest.objects.filter(status=RestoreTestStatus.PASSED).order_by("-finished_at", "-id")
              .select_related("backup").first())
    if proven is not None:
        candidates = candidates.filter(finished_at__lt=proven.backup.finished_at).exclude(pk=proven.backup_id)
    removed = []
    for run in candidates.order_by("id"):
        with transaction.atomic():
            BackupRun.objects.filter(pk=run.pk).update(file_deleted_at=now)
            record_audit(actor=actor, action="remove_backup_file", obj=run, after={"file": run.file_path},
                         reason=f"older than BACKUP_RETENTION_DAYS ({settings.BACKUP_RETENTION_DAYS})")
            # Inside the transaction: a file that cannot be removed leaves its row as it was.
            Path(run.file_path).unlink(missing_ok=True)
        removed.append(run.pk)
    return removed


def record_backup_download(*, actor: Any, backup: BackupRun) -> Path:
    """An ops admin downloads a dump: checked and audited (a dump holds every record of the marketplace)."""
    require_perm(actor, "ops.download_backuprun", "download a database backup", allow_system=False)
    if backup.status != BackupStatus.OK or backup.file_deleted_at is not None:
        raise ValidationError(f"{backup} has no file to download: only good backups within retention have one.")
    path = Path(backup.file_path)
    if not path.is_file():
        raise ValidationError(f"The file {path} of {backup} is missing on disk: run a restore test to confirm, "
                              f"and take a new backup.")
    with transaction.atomic():
        record_audit(actor=actor, action="download_backup", obj=backup, after={"file": str(path)})
    return path


# ------------------------------------------------------------------------------------------ restore test


def request_restore_test(*, actor: Any) -> RestoreTest:
    """Queue a restore test of the newest good backup (the ops admins' button); the worker runs it (audited)."""
    from . import tasks

    require_perm(actor, "ops.test_backuprun", "start a restore test")
    backup = BackupRun.objects.good().first()
    if backup is None:
        raise ValidationError("There is no good backup to test: run manage.py backup_database (or wait for the "
                              "03:00 UTC backup) first.")
    pending = RestoreTest.objects.filter(status__in=(RestoreTestStatus.QUEUED, RestoreTestStatus.RUNNING),
                                         created_at__gt=timezone.now() - QUEUED_TEST_EXPIRES).first()
    if pending is not None:
        raise ValidationError(f"{pending} is already {pending.get_status_display().lower()}: wait for its result "
                              f"on the Backups page before starting another.")
    with transaction.atomic():
        test = RestoreTest.objects.create(backup=backup, requested_by=_user(actor), actor_label=_label(actor),
                                          created_at=timezone.now())
        record_audit(actor=actor, action="request_restore_test", obj=test, after={"backup": backup.pk})
        transaction.on_commit(lambda: tasks.test_backup_restore.delay(restore_test_id=test.pk))
    return test


def run_restore_test(*, actor: Any, restore_test_id: int | None = None,
                     backup: BackupRun | None = None) -> RestoreTest:
    """Restore a backup (the queued test's, the given one, or the newest good one) into a scratch database and
    check it: SHA-256, restore, `migrate --check`, key row counts, the audit chain and its triggers there.

    The scratch database is always dropped. Safe to run twice: a queued test already run is returned as it is.
    A failed test raises a P1 alert (a backup that does not restore is as bad as none). Refused while another
    restore test runs. Must run outside a transaction (CREATE DATABASE cannot run inside one).
    """
    if connection.in_atomic_block:
        raise RuntimeError("run_restore_test creates a database: call it outside a transaction")
    if not _try_lock(RESTORE_LOCK_KEY):
        raise ValidationError("A restore test is already running: one runs at a time; wait for its result.")
    try:
        _fail_interrupted_restore_tests(actor=actor, requested=restore_test_id)
        if restore_test_id is not None:
            test = RestoreTest.objects.get(pk=restore_test_id)
            if test.status != RestoreTestStatus.QUEUED:
                return test
        else:
            test = RestoreTest.objects.create(backup=backup or BackupRun.objects.good().first(),
                                              requested_by=_user(actor), actor_label=_label(actor),
                                              created_at=timezone.now())
        test.status, test.started_at = RestoreTestStatus.RUNNING, timezone.now()
        test.scratch_database = _scratch_name(test)
        test.save(update_fields=["status", "started_at", "scratch_database"])
        started, checks, error = time.monotonic(), [], ""
        try:
            _drop_stale_scratch_databases()
            if test.backup is None:
                raise BackupFailed("there is no good backup to test: run manage.py backup_database first.")
            _restore_and_check(test.backup, test.scratch_database, checks)
        except BackupFailed as exc:
            error = str(exc)
        except Exception as exc:
            logger.exception("restore test #%s failed unexpectedly", test.pk)
            error = f"unexpected error {exc.__class__.__name__}: {exc}; see the worker's log for the traceback."
        test.checks, test.error, test.finished_at = checks, error, timezone.now()
        test.status = RestoreTestStatus.FAILED if error else RestoreTestStatus.PASSED
        test.duration_seconds = round(time.monotonic() - started, 3)
        with transaction.atomic():
            test.save()
            record_audit(actor=actor, action="test_backup_restore", obj=test, reason=error,
                         after={"status": test.status, "backup": test.backup_id,
                                "checks": {c["name"]: c["ok"] for c in checks}})
        if error:
            raise_alert(key="restore-test-failed", severity="P1", source="test_backup_restore",
                        title=f"Restore test of {test.backup or 'the latest backup'} failed", message=error)
        return test
    finally:
        _unlock(RESTORE_LOCK_KEY)


def _fail_interrupted_restore_tests(*, actor: Any, requested: int | None) -> None:
    """Under the restore lock no test runs: a 'running' row is a killed worker's, and a 'queued' one older than
    QUEUED_TEST_EXPIRES lost its task (the one this call was asked to run aside). Both are marked failed, audited, so
    that the Backups page stops showing them as pending; their scratch database goes with the stale ones."""
    now = timezone.now()
    stale = RestoreTest.objects.filter(Q(status=RestoreTestStatus.RUNNING)
                                       | Q(status=RestoreTestStatus.QUEUED, created_at__lt=now - QUEUED_TEST_EXPIRES))
    if requested is not None:
        stale = stale.exclude(pk=requested, status=RestoreTestStatus.QUEUED)
    for test in stale:
        if test.status == RestoreTestStatus.RUNNING:
            error = ("interrupted: the process running it stopped before it finished (worker killed or restarted); "
                     "its scratch database is dropped by the next test. Start another from the Backups page.")
        else:
            hours = int(QUEUED_TEST_EXPIRES.total_seconds() // 3600)
            error = (f"interrupted: no worker ran it within {hours} h of its request (the task was lost, or no "
                     f"worker serves its queue); check the workers and start another from the Backups page.")
        with transaction.atomic():
            if RestoreTest.objects.filter(pk=test.pk, status=test.status).update(
                    status=RestoreTestStatus.FAILED, error=error, finished_at=now):
                record_audit(actor=actor, action="test_backup_restore", obj=test, after={"status": "failed"},
                             reason=error)
        logger.warning("restore test #%s marked failed: %s", test.pk, error)


# Scratch databases are named restore_test_<tag>_<test id>: never derived by truncating the live database's name (a
# prefix of it could match <name>_restored, <name>_old or the live database itself), at most 41 bytes (PostgreSQL's
# limit is 63), and told apart from another installation's on the same server by the tag.
SCRATCH_PREFIX = "restore_test_"


def _scratch_tag() -> str:
    """The first 8 hex digits of the SHA-256 of this installation's database name."""
    return hashlib.sha256(connection.settings_dict["NAME"].encode()).hexdigest()[:8]


def _scratch_name(test: RestoreTest) -> str:
    return f"{SCRATCH_PREFIX}{_scratch_tag()}_{test.pk}"


def is_scratch_database(name: str) -> bool:
    """Exactly a name _scratch_name gives this installation: the only databases a restore test ever drops."""
    return re.fullmatch(rf"{SCRATCH_PREFIX}{_scratch_tag()}_[0-9]+", name) is not None


def _drop_stale_scratch_databases() -> None:
    """Under the restore lock no test is restoring: a scratch database left by a killed run is dropped."""
    with connection.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                    [f"{SCRATCH_PREFIX}{_scratch_tag()}_"])
        stale = [name for (name,) in cur.fetchall() if is_scratch_database(name)]
        for name in stale:
            try:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            except DatabaseError as exc:
                raise BackupFailed(f"could not drop the scratch database {name} left by an interrupted restore "
                                   f"test ({exc}): drop it by hand (DROP DATABASE \"{name}\").") from exc
            logger.warning("dropped the scratch database %s left by an interrupted restore test", name)


@contextmanager
def _check(checks: list[dict], name: str) -> Iterator[dict]:
    """Time one check and record it; a BackupFailed inside marks it failed and ends the test."""
    entry = {"name": name, "ok": False, "seconds": None, "detail": ""}
    checks.append(entry)
    started = time.monotonic()
    try:
        yield entry
        entry["ok"] = True
    except BackupFailed as exc:
        entry["detail"] = str(exc)
        raise
    finally:
        entry["seconds"] = round(time.monotonic() - started, 3)


def _restore_and_check(backup: BackupRun, scratch: str, checks: list[dict]) -> None:
    path = Path(backup.file_path)
    with _check(checks, "checksum") as entry:
        entry["detail"] = _verify_checksum(backup, path)
    try:
        with _check(checks, "restore") as entry:
            entry["detail"] = _restore(path, scratch)
        _register_scratch_connection(scratch)
        with _check(checks, "migrate_check") as entry:
            entry["detail"] = _migrate_check(backup)
        with _check(checks, "row_counts") as entry:
            entry["detail"] = _compare_counts(backup)
        with _check(checks, "audit_chain") as entry:
            verdict = verify_audit_chain(using=RESTORE_ALIAS)
            if not verdict.ok:
                raise BackupFailed(
                    f"the restored audit_log's hash chain is broken at row {verdict.first_broken_id} "
                    f"({verdict.problem}): the audit log was altered before this backup; run manage.py "
                    f"verify_audit_log on the live database, open an incident, and keep the older backups.")
            entry["detail"] = f"{verdict.rows_checked} rows, chain intact"
        with _check(checks, "audit_triggers") as entry:
            entry["detail"] = _check_audit_triggers()
    finally:
        scratch_connection = getattr(connections._connections, RESTORE_ALIAS, None)
        if scratch_connection is not None:
            scratch_connection.close()
            del connections[RESTORE_ALIAS]
        with _check(checks, "drop_scratch_database") as entry:
            try:
                with connection.cursor() as cur:
                    cur.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
            except DatabaseError as exc:
                raise BackupFailed(f"could not drop the scratch database {scratch} ({exc}): drop it by hand "
                                   f"(DROP DATABASE \"{scratch}\").") from exc
            entry["detail"] = f"{scratch} dropped"


def _register_scratch_connection(scratch: str) -> None:
    """Make the restored copy a database alias, so the ORM's own code (the migration loader, the audit chain's
    verification) reads it exactly as it reads the live database.

    The connection is this thread's only (not in DATABASES): other threads never see it, and Django's test
    isolation treats it as a connection created on the fly, which it allows.
    """
    settings_dict = {**connection.settings_dict, "NAME": scratch, "CONN_MAX_AGE": 0}
    connections[RESTORE_ALIAS] = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, RESTORE_ALIAS)


def _verify_checksum(backup: BackupRun, path: Path) -> str:
    if backup.file_deleted_at is not None:
        raise BackupFailed(f"the dump of {backup} was removed by retention on {backup.file_deleted_at:%Y-%m-%d %H:%M} "
                           f"UTC (BACKUP_RETENTION_DAYS): test a newer good backup.")
    if not path.is_file():
        raise BackupFailed(f"the dump {path} is missing: it was moved or deleted outside retention; take a new "
                           f"backup (manage.py backup_database) and find out who removed it.")
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    if size != backup.size_bytes or digest.hexdigest() != backup.sha256:
        raise BackupFailed(
            f"the dump {path.name} is corrupt: SHA-256 {digest.hexdigest()[:16]}… ({size:,} bytes) instead of the "
            f"recorded {backup.sha256[:16]}… ({backup.size_bytes:,} bytes); do not restore it: test an older good "
            f"backup, take a new one, and check the disk holding BACKUP_DIR (runbook 001 §4.10).")
    return f"{size:,} bytes, SHA-256 matches"


def _restore(path: Path, scratch: str) -> str:
    pg_restore = _require_binary("pg_restore")
    with connection.cursor() as cur:
        try:
            cur.execute(f'CREATE DATABASE "{scratch}" TEMPLATE template0')
        except DatabaseError as exc:
            if getattr(exc.__cause__, "sqlstate", None) != INSUFFICIENT_PRIVILEGE:
                raise
            cur.execute("SELECT current_user")
            user = cur.fetchone()[0]
            raise BackupFailed(f"the database user {user} may not create the scratch database ({exc}): grant it "
                               f"CREATEDB (ALTER ROLE \"{user}\" CREATEDB), which the restore test needs to restore "
                               f"into a database of its own and drop it afterwards.") from exc
    conninfo, env = _libpq_connection({**connection.settings_dict, "NAME": scratch})
    # Parallel jobs rebuild the big indexes side by side; --exit-on-error: any error fails the test.
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    proc = subprocess.Popen([str(pg_restore), "--exit-on-error", "--no-owner", "--no-privileges", "--jobs", jobs,
                             "--no-password", f"--dbname={conninfo}", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    with _deadline(proc, settings.BACKUP_TIMEOUT_SECONDS) as expired:
        _, stderr = proc.communicate()
    if expired.is_set():
        raise BackupFailed(_timeout_message("pg_restore"))
    if proc.returncode != 0:
        raise BackupFailed(_explain_tool_failure("pg_restore", stderr, proc.returncode))
    return f"restored into {scratch} with {jobs} jobs"


def _migrate_check(backup: BackupRun) -> str:
    """The restored copy must be at the code's schema version: no migration missing, none unknown to the code."""
    loader = MigrationLoader(connections[RESTORE_ALIAS], ignore_no_migrations=True)
    unknown = sorted(set(loader.applied_migrations) - set(loader.graph.nodes))
    taken = ", ".join(f"{app} {name}" for app, name in sorted(backup.schema_version.items())) or "unknown"
    if unknown:
        raise BackupFailed(
            f"the dump comes from a newer schema version: it has migrations this code does not know "
            f"({', '.join(f'{a}.{n}' for a, n in unknown[:5])}); test or restore it with the release it was taken "
            f"with (schema at backup time: {taken}).")
    out = StringIO()
    try:
        call_command("migrate", database=RESTORE_ALIAS, check_unapplied=True, skip_checks=True, interactive=False,
                     verbosity=1, stdout=out, stderr=out)
    except SystemExit:
        missing = [f"{m.app_label}.{m.name}" for m, _ in
                   _plan(loader)][:5]
        raise BackupFailed(
            f"migrate --check: the dump comes from an older schema version (missing {', '.join(missing)}); a real "
            f"restore of it needs manage.py migrate afterwards, or the release it was taken with "
            f"(schema at backup time: {taken}).") from None
    except Exception as exc:
        raise BackupFailed(f"migrate --check failed on the restored copy: {exc}") from exc
    return "no unapplied migrations, none unknown"


def _plan(loader: MigrationLoader) -> list:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connections[RESTORE_ALIAS])
    return executor.migration_plan(executor.loader.graph.leaf_nodes())


def _compare_counts(backup: BackupRun) -> str:
    found = {}
    with connections[RESTORE_ALIAS].cursor() as cur:
        for label, table in KEY_TABLES.items():
            cur.execute(f'SELECT count(*) FROM "{table}"')
            found[label] = cur.fetchone()[0]
    differ = {k: (backup.row_counts.get(k), v) for k, v in found.items() if backup.row_counts.get(k) != v}
    if differ:
        listed = "; ".join(f"{k}: {want} recorded, {got} restored" for k, (want, got) in differ.items())
        raise BackupFailed(f"row counts differ from those recorded at backup time ({listed}): the dump is "
                           f"incomplete; do not rely on it, test an older backup and take a new one.")
    return ", ".join(f"{k} {v:,}" for k, v in found.items())


# The triggers of ops/migrations/0002 and 0004 that keep audit_log append-only: they must come back enabled.
AUDIT_TRIGGERS = ("audit_log_no_update_delete", "audit_log_no_truncate")


def _check_audit_triggers() -> str:
    with connections[RESTORE_ALIAS].cursor() as cur:
        cur.execute("SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'audit_log'::regclass "
                    "AND tgname = ANY(%s)", [list(AUDIT_TRIGGERS)])
        found = dict(cur.fetchall())
    missing = [t for t in AUDIT_TRIGGERS if t not in found]
    disabled = [t for t, state in found.items() if state == "D"]
    if missing or disabled:
        raise BackupFailed(
            f"audit_log is not append-only in the restored copy (missing triggers: {', '.join(missing) or 'none'}; "
            f"disabled: {', '.join(disabled) or 'none'}): the live database may have lost them too; check with "
            f"\\d audit_log and re-run ops migration 0002/0004's SQL.")
    # And they refuse for real: a DELETE and a TRUNCATE inside a transaction that is rolled back anyway.
    refused = []
    for statement in ("DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)", "TRUNCATE audit_log"):
        try:
            with transaction.atomic(using=RESTORE_ALIAS), connections[RESTORE_ALIAS].cursor() as cur:
                cur.execute("SELECT count(*) FROM audit_log")
                has_rows = cur.fetchone()[0] > 0
                cur.execute(statement)
                transaction.set_rollback(True, using=RESTORE_ALIAS)
        except DatabaseError as exc:
            if "append-only" not in str(exc):
                raise
            refused.append(statement.split()[0])
            continue
        if statement.startswith("DELETE") and not has_rows:
            continue  # a row trigger cannot fire on an empty table; the catalogue check above covers it
        raise BackupFailed(f"the restored audit_log accepted {statement.split()[0]}: its append-only trigger "
                           f"does not refuse it; check bo_audit_log_append_only() on the live database.")
    return f"{', '.join(AUDIT_TRIGGERS)} present and enabled; refused: {', '.join(refused)}"
