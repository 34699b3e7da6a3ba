"""backup: the back office's backup and restore test of the 1,000,000-order database.

`backup_seconds` is `ops.backups.run_backup` (exported snapshot, row counts, pg_dump -Fc streamed through SHA-256
into a .partial file, fsync, rename, retention) against a plain `pg_dump -Fc -f FILE` of the same database with the
same binary in the same run; two alternating rounds each, the best of each kept. `dump_mb` is the dump's size and
`restore_test_seconds` the whole `ops.backups.run_restore_test` (checksum, pg_restore, migrate --check, row counts,
audit chain, triggers, drop). Targets: ratio ≥ 0.83 (within 1.2× of plain pg_dump), restore test < 180 s.
"""
from __future__ import annotations

import shutil
import subprocess
import time

from .common import ROOT, figure, million_orders

ROUNDS = 2


def main() -> None:
    million_orders()
    from django.conf import settings
    from django.db import connection

    from ops.backups import services as backups
    from ops.backups.tools import _libpq_connection
    from ops.models import BackupTrigger

    directory = ROOT / ".data" / "bench-backups"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    settings.BACKUP_DIR = str(directory)
    pg_dump = backups.pg_binary("pg_dump")
    conninfo, env = _libpq_connection(connection.settings_dict)

    plain, ours, run = [], [], None
    try:
        for i in range(ROUNDS):
            target = directory / f"plain-{i}.dump"
            started = time.perf_counter()
            subprocess.run([str(pg_dump), "--format=custom", "--no-password", "-f", str(target),
                            f"--dbname={conninfo}"], env=env, check=True)
            plain.append(time.perf_counter() - started)
            target.unlink()
            started = time.perf_counter()
            run = backups.run_backup(actor="system:bench", trigger=BackupTrigger.BENCH)
            ours.append(time.perf_counter() - started)
            if run.status != "ok":
                raise SystemExit(f"backup failed: {run.error}")
        figure("backup_seconds", min(ours), "s", baseline=min(plain), rounds=ROUNDS, all=[round(x, 2) for x in ours],
               baseline_all=[round(x, 2) for x in plain], orders=run.row_counts["orders"], target_ratio=0.83)
        figure("backup_dump_mb", run.size_bytes / 1e6, "MB")
        started = time.perf_counter()
        test = backups.run_restore_test(actor="system:bench", backup=run)
        elapsed = time.perf_counter() - started
        if test.status != "passed":
            raise SystemExit(f"restore test failed: {test.error}")
        figure("restore_test_seconds", elapsed, "s", limit=180,
               checks={c["name"]: c["seconds"] for c in test.checks})
    finally:
        shutil.rmtree(directory, ignore_errors=True)
