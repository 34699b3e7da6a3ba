"""Verifying the hash-chained audit log: recompute every row's hash and name the first that does not match."""
from __future__ import annotations

from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, transaction

from .models import AuditLog
from .services import GENESIS_HASH, hashed_fields, row_digest


@dataclass
class ChainVerdict:
    ok: bool
    rows_checked: int
    first_broken_id: int | None = None
    problem: str = ""


def verify_audit_chain(*, batch: int = 5000, using: str = DEFAULT_DB_ALIAS) -> ChainVerdict:
    """Recompute every row's hash in id order; name the first row that does not match.

    `using` names another database alias: the restore test verifies the chain inside a restored copy.
    """
    prev, checked, last_id = GENESIS_HASH, 0, 0
    with transaction.atomic(using=using):
        while True:
            rows = list(AuditLog.objects.using(using).filter(id__gt=last_id).order_by("id")[:batch])
            if not rows:
                return ChainVerdict(ok=True, rows_checked=checked)
            for row in rows:
                checked += 1
                if row.prev_hash != prev:
                    return ChainVerdict(False, checked, row.id, "prev_hash does not match the previous row")
                if row_digest(prev, hashed_fields(row)) != row.row_hash:
                    return ChainVerdict(False, checked, row.id, "row content does not match its row_hash")
                prev, last_id = row.row_hash, row.id
