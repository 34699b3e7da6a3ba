"""The checks a restore test runs on a backup: its checksum, pg_restore, migrate --check, row counts, audit triggers."""
from __future__ import annotations

import hashlib
import os
import subprocess
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import DatabaseError, connection, connections, transaction
from django.db.migrations.loader import MigrationLoader

from ..models import BackupRun
from .common import CHUNK, INSUFFICIENT_PRIVILEGE, KEY_TABLES, RESTORE_ALIAS, BackupFailed
from .tools import _deadline, _explain_tool_failure, _libpq_connection, _require_binary, _timeout_message


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
