"""Writing and verifying the hash-chained audit log. Services call `record_audit` inside their transaction."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.db.models import Model
from django.utils import timezone

from .models import AuditLog

GENESIS_HASH = "0" * 64
# One constant advisory lock: writers queue, so two rows never claim the same predecessor.
_AUDIT_LOCK_KEY = 0x5A0D17


def actor_label(actor: Any) -> str:
    if actor is None:
        return "system"
    if isinstance(actor, str):
        return actor
    return actor.get_username()


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, sort_keys=True)) if value is not None else None


def row_digest(prev_hash: str, fields: dict[str, Any]) -> str:
    payload = json.dumps({"prev": prev_hash, **fields}, sort_keys=True, separators=(",", ":"), cls=DjangoJSONEncoder)
    return hashlib.sha256(payload.encode()).hexdigest()


def _hashed_fields(row: AuditLog) -> dict[str, Any]:
    return {
        "created_at": row.created_at.isoformat(),
        "actor_id": row.actor_id,
        "actor_label": row.actor_label,
        "as_superuser": row.as_superuser,
        "action": row.action,
        "object_type": row.object_type,
        "object_id": row.object_id,
        "object_repr": row.object_repr,
        "before": row.before,
        "after": row.after,
        "reason": row.reason,
    }


def record_audit(*, actor: Any, action: str, obj: Model | None = None, object_type: str = "",
                 object_id: str = "", before: Any = None, after: Any = None, reason: str = "") -> AuditLog:
    """Append one audit row; must run inside the caller's transaction (raises otherwise)."""
    if not connection.in_atomic_block:
        raise RuntimeError("record_audit must run inside the service's transaction.atomic block")
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_AUDIT_LOCK_KEY])
    prev = AuditLog.objects.order_by("-id").values_list("row_hash", flat=True).first() or GENESIS_HASH
    row = AuditLog(
        created_at=timezone.now(),
        actor=actor if isinstance(actor, Model) else None,
        actor_label=actor_label(actor)[:150],
        as_superuser=bool(getattr(actor, "is_superuser", False)),
        action=action,
        object_type=object_type or (obj._meta.label_lower if obj is not None else ""),
        object_id=object_id or (str(obj.pk) if obj is not None else ""),
        object_repr=(str(obj) if obj is not None else "")[:200],
        before=_canonical(before),
        after=_canonical(after),
        reason=reason,
        prev_hash=prev,
    )
    row.row_hash = row_digest(prev, _hashed_fields(row))
    row.save(force_insert=True)
    return row


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
                if row_digest(prev, _hashed_fields(row)) != row.row_hash:
                    return ChainVerdict(False, checked, row.id, "row content does not match its row_hash")
                prev, last_id = row.row_hash, row.id
