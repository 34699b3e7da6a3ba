"""The state transition every stage of an owner action shares: the audited status change, the audit snapshot, and
which server key signs for each custody route.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from backoffice.audit.services import record_audit
from chain import transactions
from ops.models import (
    ContractAction,
    Custody,
)

logger = logging.getLogger(__name__)


SYSTEM = "system:timeouts"


def snapshot(action: ContractAction) -> dict[str, Any]:
    return {"status": action.status, "chain": action.chain, "call": action.description,
            "calldata_hash": action.calldata_hash, "nonce": action.nonce, "tx_hash": action.tx_hash,
            "approved_by": action.approved_by_id, "outcome": action.outcome, "custody": action.custody,
            "safe_nonce": action.safe_nonce, "signing_hash": action.signing_hash or None}


# The server key that signs the transaction of each custody route (none signs as an owner in safe mode).
ROLE = {Custody.OWNER_KEY: "owner", Custody.SAFE: "relayer", Custody.GUARDIAN: "relayer", Custody.KEEPER: "keeper",
        Custody.GUARDIAN_KEY: "guardian"}


def server_signer(role: str = "owner") -> str:
    try:
        return transactions.signer_address(role)
    except transactions.SignerUnavailable as exc:
        raise ValidationError({"signer": str(exc)}) from None


def mark_action(action: ContractAction, status: str, *, only_from: tuple[str, ...], audit_reason: str = "",
                **fields: Any) -> ContractAction:
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status not in only_from:
            return action
        before = snapshot(action)
        action.status = status
        for key, value in fields.items():
            setattr(action, key, value)
        action.save(update_fields=["status", *fields])
        record_audit(actor="system:actions", action=f"mark_contract_action_{status}", obj=action, before=before,
                     after=snapshot(action), reason=audit_reason)
    return action


def rpc_error(chain: str, exc: Exception, what: str) -> ValidationError:
    return ValidationError({"chain": f"{chain} RPC unreachable, {what}: {exc}"})
