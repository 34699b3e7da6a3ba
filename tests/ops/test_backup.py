"""Backups and restore tests on the real test database, with the real pg_dump and pg_restore.

Each test commits its rows (pg_dump reads through its own connection), so the tests are transactional. Faults are
real where they can be (a missing directory, an altered or truncated file, /dev/full for a full disk); a fake
pg_dump script stands in only for a pg_dump that itself reports a full disk.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, connections
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from backoffice.audit.services import record_audit
from disputes.models import Blacklist
from ops.backups import dump, restore, tools
from ops.backups import services as backups
from ops.models import BackupRun, BackupStatus, ContractAction, RestoreTest, RestoreTestStatus
from tests import factories as f

pytestmark = pytest.mark.django_db(transaction=True)


def latest_ops_migration() -> str:
    """The ops app's newest migration (the code's schema version), whatever it is called."""
    from django.db.migrations.loader import MigrationLoader

    return MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes("ops")[0][1]


@pytest.fixture
def backup_dir(settings, tmp_path) -> Path:
    directory = tmp_path / "backups"
    directory.mkdir()
    settings.BACKUP_DIR = str(directory)
    return directory


@pytest.fixture
def seeded(django_user_model):
    """Rows in each key table and an audit chain of a few rows."""
    from django.db import transaction

    proposer = django_user_model.objects.create_user("proposer", is_staff=True)
    for _ in range(3):
        f.order()
    Blacklist.objects.create(wallet=f.wallet(), reason="fraud", source="manual", created_at=timezone.now())
    ContractAction.objects.create(chain="bsc", kind="pause", description="pause()", to_address=f.wallet(),
                                  calldata="0x8456cb59", calldata_hash="0x" + "2" * 64, reason="test",
                                  proposed_by=proposer)
    with transaction.atomic():
        for n in range(4):
            record_audit(actor="system:test", action="seed", object_type="test", object_id=str(n))


def _sql(statement: str, params=None):
    with connection.cursor() as cur:
        cur.execute(statement, params or [])


def _scratch_databases() -> list[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database WHERE starts_with(datname, 'restore_test_')")
        return [r[0] for r in cur.fetchall()]


def _databases() -> set[str]:
    with connection.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database")
        return {r[0] for r in cur.fetchall()}


def _failed_check(test) -> str:
    return next(c["name"] for c in test.checks if not c["ok"])


def _wrapped_pg_dump(settings, tmp_path, *, after: str) -> None:
    """PG_BIN_DIR with the real pg_dump run by a shell script that then runs `after` (the fault to inject), and the
    real pg_restore and psql."""
    real = backups.pg_binary("pg_dump").parent
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_dump").write_text(f'#!/bin/sh\n"{real}/pg_dump" "$@"\nrc=$?\n{after}\nexit $rc\n')
    (fake / "pg_dump").chmod(0o755)
    for name in ("pg_restore", "psql"):
        (fake / name).symlink_to(real / name)
    settings.PG_BIN_DIR = str(fake)


def _psql_command(sql: str) -> str:
    """A psql command line (for a fake's script) running `sql` on the test database as the tests connect to it."""
    from psycopg.conninfo import make_conninfo

    db = connection.settings_dict
    conninfo = make_conninfo(dbname=db["NAME"], user=db["USER"] or None, host=db["HOST"] or None,
                             port=db["PORT"] or None, password=db["PASSWORD"] or None)
    psql = backups.pg_binary("pg_dump").parent / "psql"
    return f"\"{psql}\" -X -q -d '{conninfo}' -c \"{sql}\" >/dev/null 2>&1"


def test_backup_and_restore_test_round_trip_with_seeded_data(seeded, backup_dir):
    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.OK, run.error
    path = Path(run.file_path)
    assert path.parent == backup_dir and path.name.endswith(".dump")
    assert run.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert run.size_bytes == path.stat().st_size and path.read_bytes()[:5] == b"PGDMP"
    assert path.stat().st_mode & 0o777 == 0o600
    assert run.row_counts == {"orders": 3, "audit_log": 4, "contract_actions": 1, "blacklist": 1}
    assert run.schema_version["ops"] == latest_ops_migration()
    assert sorted(p.name for p in backup_dir.iterdir()) == [path.name]  # no .partial left

    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.PASSED, test.error
    assert test.backup == run
    assert [c["name"] for c in test.checks] == ["checksum", "restore", "migrate_check", "row_counts", "audit_chain",
                                                "audit_triggers", "drop_scratch_database"]
    assert all(c["ok"] and c["seconds"] is not None for c in test.checks)
    assert "4 rows, chain intact" in test.checks[4]["detail"]
    assert "refused: DELETE, TRUNCATE" in test.checks[5]["detail"]
    assert _scratch_databases() == []
    assert AuditLog.objects.filter(action="backup_database", object_id=str(run.pk)).exists()
    assert AuditLog.objects.filter(action="test_backup_restore", object_id=str(test.pk)).exists()


def test_backup_command_and_restore_test_command_report_success(seeded, backup_dir, capsys):
    call_command("backup_database")
    call_command("test_backup_restore")

    out = capsys.readouterr().out
    assert "SHA-256" in out and "orders 3" in out
    assert "passed" in out and "ok   audit_chain" in out


def test_restore_test_dump_altered_by_one_byte_fails_the_checksum(seeded, backup_dir):
    run = backups.run_backup(actor="system:test")
    data = bytearray(Path(run.file_path).read_bytes())
    data[len(data) // 2] ^= 0x01
    Path(run.file_path).write_bytes(bytes(data))

    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.FAILED
    assert [c["name"] for c in test.checks] == ["checksum"]  # nothing restored from a corrupt file
    assert "is corrupt" in test.error and "older good backup" in test.error
    assert Alert.objects.filter(key="restore-test-failed", severity="P1").exists()


def test_restore_test_truncated_dump_fails_the_restore(seeded, backup_dir):
    run = backups.run_backup(actor="system:test")
    path = Path(run.file_path)
    path.write_bytes(path.read_bytes()[: run.size_bytes * 2 // 3])
    # Cut short before it was hashed (as a dump truncated while written would be): only pg_restore can tell.
    BackupRun.objects.filter(pk=run.pk).update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                                               size_bytes=path.stat().st_size)

    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.FAILED
    assert _failed_check(test) == "restore"
    assert "pg_restore" in test.error
    assert test.checks[-1]["name"] == "drop_scratch_database" and test.checks[-1]["ok"]
    assert _scratch_databases() == []


def test_restore_test_finds_an_audit_row_edited_in_the_source(seeded, backup_dir):
    edited = AuditLog.objects.order_by("id")[1]
    _sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
    try:
        _sql("UPDATE audit_log SET reason = 'rewritten' WHERE id = %s", [edited.pk])
    finally:
        _sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
    backups.run_backup(actor="system:test")

    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.FAILED
    assert _failed_check(test) == "audit_chain"
    assert f"broken at row {edited.pk}" in test.error


def test_restore_test_disabled_audit_trigger_in_the_dump_fails(seeded, backup_dir):
    _sql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_truncate")
    try:
        backups.run_backup(actor="system:test")
    finally:
        _sql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_truncate")

    test = backups.run_restore_test(actor="system:test")

    assert _failed_check(test) == "audit_triggers"
    assert "disabled: audit_log_no_truncate" in test.error


@pytest.mark.parametrize("change, message", [("older", "older schema version"), ("newer", "newer schema version")])
def test_restore_test_dump_from_another_schema_version_fails_migrate_check(seeded, backup_dir, change, message):
    if change == "older":
        latest = latest_ops_migration()
        undo = (f"INSERT INTO django_migrations (app, name, applied) VALUES ('ops', '{latest}', now())",)
        _sql(f"DELETE FROM django_migrations WHERE app = 'ops' AND name = '{latest}'")
    else:
        undo = ("DELETE FROM django_migrations WHERE app = 'ops' AND name = '9999_from_the_future'",)
        _sql("INSERT INTO django_migrations (app, name, applied) VALUES ('ops', '9999_from_the_future', now())")
    try:
        backups.run_backup(actor="system:test")
    finally:
        _sql(undo[0])

    test = backups.run_restore_test(actor="system:test")

    assert _failed_check(test) == "migrate_check"
    assert message in test.error
    assert _scratch_databases() == []


def test_restore_test_without_a_good_backup_fails_and_says_what_to_do(backup_dir):
    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.FAILED
    assert "no good backup" in test.error and "backup_database" in test.error


def test_backup_retention_keeps_the_last_good_backup(backup_dir, settings):
    settings.BACKUP_RETENTION_DAYS = 30
    runs = [backups.run_backup(actor="system:test") for _ in range(3)]
    assert all(r.status == BackupStatus.OK for r in runs)
    old = timezone.now() - timedelta(days=40)
    BackupRun.objects.update(finished_at=old)

    removed = backups.prune_backups(actor="system:test")

    newest = runs[-1]
    assert sorted(removed) == [runs[0].pk, runs[1].pk]
    assert [p.name for p in backup_dir.iterdir()] == [Path(newest.file_path).name]
    assert list(BackupRun.objects.good()) == [newest]
    assert BackupRun.objects.get(pk=runs[0].pk).file_deleted_at is not None
    assert AuditLog.objects.filter(action="remove_backup_file").count() == 2
    # A fresh backup: the 40-day-old one is no longer the last good one, and goes.
    fresh = backups.run_backup(actor="system:test")
    assert [p.name for p in backup_dir.iterdir()] == [Path(fresh.file_path).name]


def _restore_test(backup, status: str, *, days_ago: float):
    at = timezone.now() - timedelta(days=days_ago)
    return RestoreTest.objects.create(backup=backup, actor_label="system:test", created_at=at, started_at=at,
                                      finished_at=at, status=status,
                                      error="" if status == RestoreTestStatus.PASSED else "row counts differ")


def test_backup_retention_keeps_the_last_backup_that_passed_a_restore_test(backup_dir, settings):
    settings.BACKUP_RETENTION_DAYS = 30
    runs = [backups.run_backup(actor="system:test") for _ in range(4)]
    for days, run in zip((60, 50, 45, 40), runs, strict=True):
        BackupRun.objects.filter(pk=run.pk).update(finished_at=timezone.now() - timedelta(days=days))
    # runs[1] restored whole; the newer ones did not: runs[1] is the last backup known to come back.
    _restore_test(runs[1], RestoreTestStatus.PASSED, days_ago=49)
    _restore_test(runs[2], RestoreTestStatus.FAILED, days_ago=44)
    _restore_test(runs[3], RestoreTestStatus.FAILED, days_ago=39)

    removed = backups.prune_backups(actor="system:test")

    assert removed == [runs[0].pk]
    assert sorted(p.name for p in backup_dir.iterdir()) == sorted(Path(r.file_path).name for r in runs[1:])


def test_backup_two_concurrent_runs_one_refused(backup_dir, monkeypatch):
    inside, release = threading.Event(), threading.Event()
    real_open = dump.open_partial_file

    def slow_open(path):
        inside.set()
        assert release.wait(30)
        return real_open(path)

    monkeypatch.setattr(dump, "open_partial_file", slow_open)
    result = {}

    def first():
        try:
            result["run"] = backups.run_backup(actor="system:first")
        finally:
            connection.close()

    thread = threading.Thread(target=first)
    thread.start()
    try:
        assert inside.wait(30)
        with pytest.raises(ValidationError, match="already running .*by system:first"):
            backups.run_backup(actor="system:second")
    finally:
        release.set()
        thread.join(60)

    assert result["run"].status == BackupStatus.OK
    assert BackupRun.objects.count() == 1


def test_backup_missing_backup_dir_fails_with_the_fix(settings, tmp_path):
    settings.BACKUP_DIR = str(tmp_path / "not-mounted")

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED
    assert "does not exist" in run.error and "mount the backup volume" in run.error
    assert not (tmp_path / "not-mounted").exists()  # a configured directory is never created
    alert = Alert.objects.get(key="backup-failed")
    assert alert.severity == "P2" and "does not exist" in alert.message


def test_backup_unwritable_backup_dir_fails_with_the_fix(settings, tmp_path):
    # As root every directory is writable: a path under a regular file can be written by nobody.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings.BACKUP_DIR = str(blocker)

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED and "is not a directory" in run.error
    if os.geteuid() != 0:
        directory = tmp_path / "read-only"
        directory.mkdir(mode=0o500)
        settings.BACKUP_DIR = str(directory)
        assert "not writable" in backups.run_backup(actor="system:test").error


def test_backup_missing_pg_dump_fails_naming_pg_bin_dir(backup_dir, settings, tmp_path):
    settings.PG_BIN_DIR = str(tmp_path / "no-postgres")

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED
    assert "pg_dump was not found" in run.error and "PG_BIN_DIR" in run.error
    assert list(backup_dir.iterdir()) == []


def test_backup_full_disk_leaves_no_file(backup_dir, monkeypatch):
    # /dev/full answers every write with ENOSPC: the kernel's own full disk.
    monkeypatch.setattr(dump, "open_partial_file", lambda path: (path.touch(), open("/dev/full", "wb"))[1])

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED
    assert "disk is full" in run.error and "BACKUP_DIR" in run.error
    assert list(backup_dir.iterdir()) == []
    assert run.file_path == "" and run.sha256 == ""


def test_backup_pg_dump_reporting_a_full_disk_leaves_no_file(backup_dir, settings, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "pg_dump"
    script.write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 16.0'; exit 0; }\n"
                      "printf 'PGDMP partial bytes'\n"
                      "echo 'pg_dump: error: could not write to output file: No space left on device' >&2\nexit 1\n")
    script.chmod(0o755)
    settings.PG_BIN_DIR = str(fake)

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED and "disk is full" in run.error
    assert list(backup_dir.iterdir()) == []


def test_backup_command_exits_non_zero_naming_the_cause(settings, tmp_path):
    settings.BACKUP_DIR = str(tmp_path / "missing")

    with pytest.raises(CommandError, match="BACKUP_DIR .* does not exist"):
        call_command("backup_database")


def _partial_name(database: str, run_id: int) -> str:
    return f".{database}-20261205T030000Z-{run_id}.dump.partial"


def test_backup_interrupted_run_is_marked_failed_and_its_partial_removed(backup_dir):
    dead = BackupRun.objects.create(started_at=timezone.now() - timedelta(hours=1), trigger="schedule",
                                    actor_label="system:test")
    (backup_dir / _partial_name(connection.settings_dict["NAME"], dead.pk)).write_bytes(b"PGDMP half")

    run = backups.run_backup(actor="system:test")

    dead.refresh_from_db()
    assert dead.status == BackupStatus.FAILED and "interrupted" in dead.error
    assert sorted(p.name for p in backup_dir.iterdir()) == [Path(run.file_path).name]


def test_backup_leaves_another_databases_partial_file_alone(backup_dir):
    # A second installation dumping into the same BACKUP_DIR may be writing this file right now.
    theirs = [backup_dir / _partial_name("other_db", 7),
              backup_dir / _partial_name(connection.settings_dict["NAME"] + "-staging", 7)]
    for path in theirs:
        path.write_bytes(b"PGDMP being written")

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.OK, run.error
    assert all(path.exists() for path in theirs)


def test_backup_survives_the_servers_idle_in_transaction_timeout(backup_dir, settings, tmp_path):
    # The snapshot's transaction idles while pg_dump works: here pg_dump "works" 1.5 s past a 0.5 s timeout.
    _wrapped_pg_dump(settings, tmp_path, after="sleep 1.5")
    name = connection.settings_dict["NAME"]
    _sql(f"ALTER DATABASE \"{name}\" SET idle_in_transaction_session_timeout = '500ms'")
    connection.close()
    try:
        run = backups.run_backup(actor="system:test")
    finally:
        connection.close()
        _sql(f"ALTER DATABASE \"{name}\" RESET idle_in_transaction_session_timeout")
        connection.close()

    assert run.status == BackupStatus.OK, run.error
    assert sorted(p.name for p in backup_dir.iterdir()) == [Path(run.file_path).name]


def test_backup_connection_lost_before_commit_leaves_no_complete_file(backup_dir, settings, tmp_path):
    # Once pg_dump has finished, the session holding the snapshot is killed (a restart, a dropped connection).
    _wrapped_pg_dump(settings, tmp_path, after=_psql_command(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle in transaction' AND pid <> pg_backend_pid()"))

    run = backups.run_backup(actor="system:test")

    assert run.status == BackupStatus.FAILED
    assert "holding the dump's snapshot failed" in run.error and "discarded" in run.error
    assert run.file_path == "" and list(backup_dir.iterdir()) == []


def _run_backup_in_thread(timeout: float) -> tuple[dict, threading.Thread]:
    """run_backup in a thread joined with `timeout`, so that a hang fails the test instead of hanging the suite."""
    result = {}

    def run():
        try:
            result["run"] = backups.run_backup(actor="system:test")
        except Exception as exc:  # noqa: BLE001 - reported by the test
            result["exc"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return result, thread


@pytest.mark.parametrize("table", ["django_session", "orders"])
def test_backup_locked_table_fails_after_the_lock_wait_instead_of_hanging(backup_dir, settings, table):
    # orders is also counted in the snapshot's own transaction; django_session only by pg_dump.
    settings.BACKUP_LOCK_WAIT_SECONDS = 1
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    with holder.cursor() as cur:
        cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    try:
        result, thread = _run_backup_in_thread(30)
        assert not thread.is_alive(), "the backup hung on the locked table"
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)

    run = result["run"]
    assert run.status == BackupStatus.FAILED
    assert "BACKUP_LOCK_WAIT_SECONDS (1 s)" in run.error and "pg_stat_activity" in run.error
    assert list(backup_dir.iterdir()) == []
    assert backups.run_backup(actor="system:test").status == BackupStatus.OK  # the lock was released


def test_backup_pg_dump_past_the_deadline_is_stopped_and_fails(backup_dir, settings, tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    pid_file = tmp_path / "pg_dump.pid"
    (fake / "pg_dump").write_text("#!/bin/sh\n[ \"$1\" = --version ] && { echo 'pg_dump (PostgreSQL) 16.0'; exit 0; }\n"
                                  f"echo $$ > {pid_file}\nprintf 'PGDMP'\nexec sleep 60\n")
    (fake / "pg_dump").chmod(0o755)
    settings.PG_BIN_DIR = str(fake)
    settings.BACKUP_TIMEOUT_SECONDS = 1

    result, thread = _run_backup_in_thread(30)

    assert not thread.is_alive(), "the backup waited for pg_dump past its deadline"
    run = result["run"]
    assert run.status == BackupStatus.FAILED
    assert "pg_dump ran longer than BACKUP_TIMEOUT_SECONDS (1 s) and was stopped" in run.error
    assert list(backup_dir.iterdir()) == []
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_restore_test_pg_restore_past_the_deadline_is_stopped_and_fails(seeded, backup_dir, settings, tmp_path):
    backups.run_backup(actor="system:test")
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "pg_restore").write_text("#!/bin/sh\nexec sleep 120\n")
    (fake / "pg_restore").chmod(0o755)
    settings.PG_BIN_DIR = str(fake)
    settings.BACKUP_TIMEOUT_SECONDS = 1

    test = backups.run_restore_test(actor="system:test")

    assert _failed_check(test) == "restore"
    assert "pg_restore ran longer than BACKUP_TIMEOUT_SECONDS (1 s)" in test.error
    assert test.checks[-1]["name"] == "drop_scratch_database" and test.checks[-1]["ok"]
    assert _scratch_databases() == []


def test_backup_scheduled_run_refused_by_a_stuck_run_raises_an_alert(backup_dir, settings, caplog):
    from ops.backups import tasks

    settings.BACKUP_TIMEOUT_SECONDS = 3600
    stuck = BackupRun.objects.create(started_at=timezone.now() - timedelta(hours=5), trigger="schedule",
                                     actor_label="system:backup_database")
    holder = connections.create_connection("default")  # the stuck run's session, holding the backup lock
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [backups.BACKUP_LOCK_KEY])
    try:
        result = tasks.backup_database()
    finally:
        holder.close()

    assert "refused" in result
    alert = Alert.objects.get(key="backup-stuck")
    assert alert.severity == "P2" and f"#{stuck.pk}" in alert.title and "BACKUP_TIMEOUT_SECONDS" in alert.message
    assert any("refused" in r.getMessage() for r in caplog.records if r.name == "ops.backups")


def test_backup_refused_by_a_run_within_its_deadline_raises_no_alert(backup_dir, settings):
    settings.BACKUP_TIMEOUT_SECONDS = 3600
    BackupRun.objects.create(started_at=timezone.now() - timedelta(minutes=5), trigger="command",
                             actor_label="ops-admin")
    holder = connections.create_connection("default")
    with holder.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", [backups.BACKUP_LOCK_KEY])
    try:
        with pytest.raises(ValidationError, match="already running"):
            backups.run_backup(actor="system:backup_database")
    finally:
        holder.close()

    assert not Alert.objects.filter(key="backup-stuck").exists()


def test_restore_test_drops_only_its_own_stale_scratch_databases(seeded, backup_dir):
    name = connection.settings_dict["NAME"]
    tag = hashlib.sha256(name.encode()).hexdigest()[:8]
    # A manual restore (README), names that merely start like a scratch database, another installation's scratch
    # database on the same server, and this installation's own leftover from a killed test.
    others = [f"{name}_restored", f"{name}_restore_test_notes", f"restore_test_{tag}_7_keep",
              "restore_test_0badc0de_7"]
    stale = f"restore_test_{tag}_999"
    for database in [*others, stale]:
        _sql(f'DROP DATABASE IF EXISTS "{database}"')
        _sql(f'CREATE DATABASE "{database}"')
    backups.run_backup(actor="system:test")
    try:
        test = backups.run_restore_test(actor="system:test")
        remaining = _databases()
    finally:
        for database in others:
            _sql(f'DROP DATABASE IF EXISTS "{database}"')

    assert set(others) <= remaining
    assert test.status == RestoreTestStatus.PASSED, test.error
    assert test.scratch_database == f"restore_test_{tag}_{test.pk}"
    assert stale not in remaining and test.scratch_database not in remaining


def test_restore_test_scratch_name_does_not_depend_on_the_length_of_the_database_name(monkeypatch):
    test = RestoreTest(pk=123456789)
    for name in ("p2p", "marketplace_backoffice_production_eu_west_1_primary_database_x"):  # 3 and 63 bytes
        monkeypatch.setitem(connection.settings_dict, "NAME", name)
        scratch = restore._scratch_name(test)
        assert scratch.startswith("restore_test_") and scratch.endswith("_123456789")
        assert len(scratch.encode()) <= 63 and not name.startswith(scratch[:-len("123456789")])
        assert backups.is_scratch_database(scratch)
        assert not backups.is_scratch_database(name) and not backups.is_scratch_database(f"{name}_old")


def test_backup_connects_with_every_libpq_option_of_the_database_settings(monkeypatch):
    from psycopg.conninfo import conninfo_to_dict

    db = {**connection.settings_dict, "NAME": "p2p_escrow", "USER": "backoffice", "PASSWORD": "s3cret pw",
          "HOST": "db-primary.internal,db-standby.internal", "PORT": "5432,5432",
          "OPTIONS": {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/db-ca.pem",
                      "target_session_attrs": "read-write", "application_name": "backoffice", "connect_timeout": 5,
                      "isolation_level": 1, "server_side_binding": True}}  # the last two are Django's own
    monkeypatch.setenv("PGSSLCRL", "/etc/ssl/db.crl")  # honoured by Django's connection: pg_dump's too

    conninfo, env = tools._libpq_connection(db)

    assert conninfo_to_dict(conninfo) == {
        "dbname": "p2p_escrow", "user": "backoffice", "host": "db-primary.internal,db-standby.internal",
        "port": "5432,5432", "sslmode": "verify-full", "sslrootcert": "/etc/ssl/db-ca.pem",
        "target_session_attrs": "read-write", "application_name": "backoffice", "connect_timeout": "5"}
    assert "s3cret" not in conninfo and env["PGPASSWORD"] == "s3cret pw"
    assert env["PGSSLCRL"] == "/etc/ssl/db.crl"


def test_backup_pg_dump_connects_with_the_settings_application_name(backup_dir, settings, monkeypatch):
    # pg_dump waits on a locked table long enough to be seen in pg_stat_activity, under the settings' name.
    settings.BACKUP_LOCK_WAIT_SECONDS = 30
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    with holder.cursor() as cur:
        cur.execute("LOCK TABLE django_session IN ACCESS EXCLUSIVE MODE")
    options = {**connection.settings_dict["OPTIONS"], "application_name": "backoffice-backup-probe"}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    seen = []
    try:
        result, thread = _run_backup_in_thread(0)
        deadline = time.monotonic() + 20
        while not seen and time.monotonic() < deadline:
            with connection.cursor() as cur:
                cur.execute("SELECT query FROM pg_stat_activity WHERE application_name = %s "
                            "AND wait_event_type = 'Lock'", ["backoffice-backup-probe"])
                seen = [r[0] for r in cur.fetchall()]
            time.sleep(0.1)
    finally:
        holder.rollback()
        holder.close()
        thread.join(60)

    assert seen and seen[0].startswith("LOCK TABLE"), "pg_dump did not connect with the settings' application_name"
    assert result["run"].status == BackupStatus.OK, result["run"].error


def test_restore_test_marks_tests_left_running_or_queued_too_long_as_interrupted(seeded, backup_dir):
    backup = backups.run_backup(actor="system:test")
    long_ago = timezone.now() - timedelta(hours=3)
    killed = RestoreTest.objects.create(backup=backup, actor_label="system:test", created_at=long_ago,
                                        started_at=long_ago, status=RestoreTestStatus.RUNNING,
                                        scratch_database=restore._scratch_name(RestoreTest(pk=999_998)))
    lost = RestoreTest.objects.create(backup=backup, actor_label="ops-admin", created_at=long_ago)
    waiting = RestoreTest.objects.create(backup=backup, actor_label="ops-admin",
                                         created_at=timezone.now() - timedelta(minutes=10))

    test = backups.run_restore_test(actor="system:test")

    assert test.status == RestoreTestStatus.PASSED, test.error
    killed.refresh_from_db(), lost.refresh_from_db(), waiting.refresh_from_db()
    assert killed.status == RestoreTestStatus.FAILED and "worker killed" in killed.error
    assert lost.status == RestoreTestStatus.FAILED and "no worker ran it within 2 h" in lost.error
    assert killed.finished_at is not None and lost.finished_at is not None
    assert waiting.status == RestoreTestStatus.QUEUED  # its task may still come
    for interrupted in (killed, lost):
        assert AuditLog.objects.filter(action="test_backup_restore", object_id=str(interrupted.pk),
                                       reason__startswith="interrupted").exists()


def test_restore_test_task_for_a_test_queued_long_ago_still_runs_it(seeded, backup_dir):
    from ops.backups import tasks

    backup = backups.run_backup(actor="system:test")
    late = RestoreTest.objects.create(backup=backup, actor_label="ops-admin",
                                      created_at=timezone.now() - timedelta(hours=3))

    result = tasks.test_backup_restore(restore_test_id=late.pk)

    late.refresh_from_db()
    assert result == {"restore_test": late.pk, "status": RestoreTestStatus.PASSED}
    assert late.status == RestoreTestStatus.PASSED, late.error


def test_restore_test_command_refuses_a_failed_backup_without_paging(backup_dir):
    bad = BackupRun.objects.create(started_at=timezone.now(), finished_at=timezone.now(), status="failed",
                                   error="the disk is full", trigger="schedule", actor_label="system:test")

    with pytest.raises(CommandError, match=f"--backup {bad.pk}: .* has no dump to test \\(the disk is full\\); "
                                           f"pick a good backup"):
        call_command("test_backup_restore", "--backup", str(bad.pk))

    assert not RestoreTest.objects.exists() and not Alert.objects.exists()


def test_restore_test_of_a_backup_removed_by_retention_says_so(backup_dir, settings):
    settings.BACKUP_RETENTION_DAYS = 30
    old, _ = backups.run_backup(actor="system:test"), backups.run_backup(actor="system:test")
    BackupRun.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=40))
    assert backups.prune_backups(actor="system:test") == [old.pk]

    with pytest.raises(CommandError, match="its file was removed by retention on .* pick a newer good backup"):
        call_command("test_backup_restore", "--backup", str(old.pk))
    assert not RestoreTest.objects.exists() and not Alert.objects.exists()

    test = backups.run_restore_test(actor="system:test", backup=BackupRun.objects.get(pk=old.pk))
    assert _failed_check(test) == "checksum" and "removed by retention" in test.error


def test_restore_test_without_createdb_says_to_grant_it(seeded, backup_dir):
    backups.run_backup(actor="system:test")
    # The back office's tables are this role's, as a deployment's are its user's; only CREATEDB is missing.
    _sql("CREATE ROLE bo_no_createdb NOLOGIN NOCREATEDB")
    _sql("GRANT ALL ON ALL TABLES IN SCHEMA public TO bo_no_createdb")
    _sql("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO bo_no_createdb")
    try:
        _sql("SET ROLE bo_no_createdb")
        test = backups.run_restore_test(actor="system:test")
    finally:
        _sql("RESET ROLE")
        _sql("DROP OWNED BY bo_no_createdb")
        _sql("DROP ROLE bo_no_createdb")

    assert _failed_check(test) == "restore"
    assert "bo_no_createdb may not create the scratch database" in test.error
    assert 'ALTER ROLE "bo_no_createdb" CREATEDB' in test.error and "unexpected" not in test.error
    assert _scratch_databases() == []
