"""Restore tests: `request_restore_test`, `run_restore_test`, the scratch database each restores into and drops."""
from __future__ import annotations

import hashlib
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.db.utils import load_backend
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.audit.selectors import verify_audit_chain
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from backoffice.tasking import send_task

from ..models import BackupRun, RestoreTest, RestoreTestStatus
from .common import (
    QUEUED_TEST_EXPIRES,
    RESTORE_ALIAS,
    RESTORE_LOCK_KEY,
    BackupFailed,
    _label,
    _try_lock,
    _unlock,
    _user,
    logger,
)
from .restore_checks import _check_audit_triggers, _compare_counts, _migrate_check, _restore, _verify_checksum

# ------------------------------------------------------------------------------------------ restore test


def request_restore_test(*, actor: Any) -> RestoreTest:
    """Queue a restore test of the newest good backup (the ops admins' button); the worker runs it (audited)."""
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
        # By name: the task module calls this one (ops.backups.tasks), so it is not imported here.
        transaction.on_commit(lambda: send_task("ops.tasks.test_backup_restore", restore_test_id=test.pk))
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
        else:  # a passed test clears a failed one
            settle_alerts(source="test_backup_restore", scope=["restore-test-failed"], raised=[])
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
