"""Taking a backup: `run_backup`, pg_dump of one exported snapshot into a hidden file, renamed only when whole."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import subprocess
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.audit.services import record_audit

from ..models import BackupRun, BackupStatus, BackupTrigger
from .common import (
    BACKUP_LOCK_KEY,
    CHUNK,
    DUMP_MAGIC,
    KEY_TABLES,
    LOCK_NOT_AVAILABLE,
    PARTIAL_SUFFIX,
    STUCK_GRACE,
    BackupFailed,
    _label,
    _try_lock,
    _unlock,
    logger,
)
from .retention import prune_backups
from .tools import (
    _deadline,
    _explain_tool_failure,
    _libpq_connection,
    _lock_wait_message,
    _require_binary,
    _timeout_message,
    backup_dir,
)

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
        # A good backup clears a failed or stuck one: the condition they paged for is over.
        settle_alerts(source="backup_database", scope=["backup-failed", "backup-stuck"], raised=[])
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
