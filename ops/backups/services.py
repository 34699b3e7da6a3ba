"""The backups' writes, one doorway: `run_backup`, `prune_backups`, `request_restore_test`, `run_restore_test`,
`record_backup_download`. Each writes its audit row in its own transaction; alerts are raised after that transaction
commits.
"""
from __future__ import annotations

# The names the rest of the code, the commands, the tests and the bench use. A test that replaces a function to
# inject a fault patches the module that looks it up (`open_partial_file`: ops.backups.dump), not this one.
from .common import BACKUP_LOCK_KEY, KEY_TABLES
from .download import record_backup_download
from .dump import run_backup
from .restore import is_scratch_database, request_restore_test, run_restore_test
from .retention import prune_backups
from .tools import pg_binary

__all__ = ["BACKUP_LOCK_KEY", "KEY_TABLES", "is_scratch_database", "pg_binary", "prune_backups",
           "record_backup_download", "request_restore_test", "run_backup", "run_restore_test"]
