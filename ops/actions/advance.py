"""Advancing sent actions (confirm, fail, replaced, stale) and recovering after a crash; replacing a stuck
transaction.
"""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import transactions
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    AWAITING,
    IN_FLIGHT,
    ActionStatus,
    ContractAction,
    Custody,
)

from . import emergency, execute, stale, transitions, verify

logger = logging.getLogger(__name__)


def advance_contract_actions(*, chain: str | None = None) -> dict[str, int]:
    """The recovery and confirmation step (beat, and `contract_action recover`).

    signed → broadcast the recorded bytes (or notice they already went out) → sent;
    sent → confirmed / failed once the receipt is `confirmations` deep; an action whose nonce
    was consumed by its replacement → replaced; a Safe or guardian action awaiting signatures or
    execution whose Safe nonce was consumed → stale. Never signs anything new.
    """
    counts = {"sent": 0, "confirmed": 0, "failed": 0, "replaced": 0, "stale": 0}
    qs = ContractAction.objects.filter(status__in=IN_FLIGHT).order_by("nonce", "pk")
    if chain:
        qs = qs.filter(chain=chain)
    for action in qs:
        try:
            _advance_one(action, counts)
        except (ProviderUnavailable, RpcError) as exc:
            logger.warning("contract action %s not advanced: %s", action.pk, exc, extra={"chain": action.chain})
    # A SafeTx whose nonce another transaction consumed (ours or one made outside) can never execute.
    counts["stale"] = stale.mark_stale_actions(chain=chain)
    return counts


def _advance_one(action: ContractAction, counts: dict[str, int]) -> None:
    receipt = transactions.receipt(action.chain, action.tx_hash)
    if receipt is None and transactions.nonce_of(action.chain, action.signer_address, "latest") > action.nonce:
        # The nonce is used, but the receipt was read first: this very transaction may have been mined
        # between the two reads, or the provider that answered the receipt lags (after a failover). Read
        # it again before blaming another transaction, or a mined, successful action would become failed.
        receipt = transactions.receipt(action.chain, action.tx_hash)
        if receipt is None:
            winner = next((a for a in execute.others_with_nonce(action) if a.tx_hash
                           and transactions.receipt(action.chain, a.tx_hash) is not None), None)
            if winner is not None:
                transitions.mark_action(action, ActionStatus.REPLACED, only_from=IN_FLIGHT,
                      outcome=f"nonce {action.nonce} used by action #{winner.pk}")
                counts["replaced"] += 1
            else:
                failed = transitions.mark_action(action, ActionStatus.FAILED, only_from=IN_FLIGHT,
                                     outcome=f"nonce {action.nonce} was used by another transaction of the signer")
                counts["failed"] += 1
                _alert_failed(failed)
            return
    if receipt is None:
        if action.status == ActionStatus.SIGNED or not transactions.tx_known(action.chain, action.tx_hash):
            # Crashed before (or lost after) the broadcast: send the very same bytes again.
            sent = execute.send_signed_action(action=action).status == ActionStatus.SENT
            if sent and action.status == ActionStatus.SIGNED:
                counts["sent"] += 1
        return
    if action.status == ActionStatus.SIGNED:
        transitions.mark_action(action, ActionStatus.SENT, only_from=(ActionStatus.SIGNED,), sent_at=timezone.now())
        counts["sent"] += 1
        action.refresh_from_db()
    depth = transactions.head(action.chain) - receipt["block"] + 1
    confirmations = get_chain_config(action.chain).confirmations
    if confirmations and depth < confirmations + 1:
        if action.receipt_block != receipt["block"]:
            ContractAction.objects.filter(pk=action.pk).update(receipt_block=receipt["block"])
        return
    # One transaction: the outcome, the attempts it replaced and, for a resume, the trading flag; a crash
    # in between would leave trading off with nothing left to confirm.
    with transaction.atomic():
        if receipt["status"] == 1:
            action = transitions.mark_action(action, ActionStatus.CONFIRMED, only_from=(ActionStatus.SENT,),
                                 receipt_block=receipt["block"], confirmed_at=timezone.now())
            counts["confirmed"] += 1
        else:
            action = transitions.mark_action(action, ActionStatus.FAILED, only_from=(ActionStatus.SENT,),
                                 receipt_block=receipt["block"], outcome="the transaction reverted on chain (receipt "
                                                                         "status 0)")
            counts["failed"] += 1
        for other in execute.others_with_nonce(action):
            if other.status in AWAITING:
                transitions.mark_action(other, ActionStatus.REJECTED, only_from=AWAITING,
                      outcome=f"not needed: action #{action.pk} with the same nonce was mined")
            elif other.status in IN_FLIGHT:
                transitions.mark_action(other, ActionStatus.REPLACED, only_from=IN_FLIGHT,
                      outcome=f"nonce {action.nonce} used by action #{action.pk}")
                counts["replaced"] += 1
        emergency.finish_resume(action)
    _alert_failed(action)
    if action.status == ActionStatus.CONFIRMED and not action.is_automatic:
        verify.verify_contract_action_effect(action=action)


def _alert_failed(action: ContractAction) -> None:
    """A failed action pages (after its own transaction): an emergency pause through the guardian module a P1
    (the escrow was not paused by it), any other staff action a P2 (staff believe it done; it changed nothing)."""
    if action.status != ActionStatus.FAILED or action.custody == Custody.KEEPER:
        return  # a keeper's timeout call loses races by design (anyone may call it); it is proposed again anyway
    if action.custody == Custody.GUARDIAN_KEY:
        raise_alert(key=f"auto-pause-failed:{action.chain}", severity="P0", source="auto_pause",
                    title=f"{action.chain}: the automatic pause FAILED on chain — pause it by hand now",
                    message=f"#{action.pk}: {action.outcome}. RB-05: Emergency stop from the back office.")
        return
    if action.custody == Custody.GUARDIAN:
        stale.alert_pause_not_done(action, f"its transaction failed ({action.outcome})")
        return
    raise_alert(key=f"action-failed:{action.chain}:{action.pk}", severity="P2", source="contract_actions",
                title=f"{action.chain}: contract action #{action.pk} failed on chain",
                message=f"#{action.pk} {action.description}: {action.outcome}. It changed nothing on chain: propose "
                        "it again if it is still needed.")


def replace_contract_action(*, actor: Any, action: ContractAction, reason: str) -> ContractAction:
    """Propose a replacement of a stuck transaction: same call, same nonce, fees raised ≥ 12.5% when
    executed. It goes through the same approval path (a different person approves it), except in Safe and
    guardian custody: there it re-sends the same signed SafeTx (or pause), so it is approved at once."""
    require_perm(actor, "ops.add_contractaction", "propose contract actions")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to replace a transaction."})
    action.refresh_from_db()
    if action.status not in IN_FLIGHT:
        raise ValidationError({"status": f"Action #{action.pk} is {action.get_status_display().lower()}: only a "
                                         "signed or sent transaction can be replaced."})
    root = action.replaces if action.replaces_id else action
    busy = ValidationError({"status": f"Nonce {root.nonce} already has a replacement waiting for approval or "
                                      "execution: approve, execute or reject that one first."})
    if root.replacements.filter(status__in=AWAITING).exists():
        raise busy
    proposed_by, signed_payload = actor, {}
    if root.custody in (Custody.SAFE, Custody.GUARDIAN):
        # Only the relayer's fee changes: the same execTransaction, with the signatures the owners already
        # gave, so it needs no new approval (the owners' decision is the SafeTx, not the gas price). So it is
        # recorded as that decision, the root's proposer and approver, who satisfied the four-eyes constraint
        # once already (the approver asking for the higher fee would otherwise approve their own proposal).
        # Whoever asked for it is the actor of its audit row.
        proposed_by = root.proposed_by
        signed_payload = {"safe_address": root.safe_address, "safe_nonce": root.safe_nonce,
                          "typed_data": root.typed_data, "signing_hash": root.signing_hash,
                          "status": ActionStatus.APPROVED, "approved_by": root.approved_by,
                          "approved_at": timezone.now()}
    with transaction.atomic():
        try:
            with transaction.atomic():
                replacement = ContractAction.objects.create(
                    chain=action.chain, kind=action.kind, params=action.params, description=action.description,
                    to_address=action.to_address, calldata=action.calldata, calldata_hash=action.calldata_hash,
                    reason=reason, order_onchain_id=action.order_onchain_id, proposed_by=proposed_by,
                    replaces=root, proposal_simulation=action.proposal_simulation, custody=root.custody,
                    tx_to=root.tx_to, tx_data=root.tx_data,
                    # The same call (and, for a SafeTx, the same bytes): its state changes are the stuck one's, and
                    # its effect is checked against them once it confirms.
                    proposal_effects=action.proposal_effects, execution_effects=action.execution_effects,
                    **signed_payload)
        except IntegrityError:  # someone else replaced it at the same moment (one pending replacement per nonce)
            raise busy from None
        record_audit(actor=actor, action="replace_contract_action", obj=replacement,
                     after={**transitions.snapshot(replacement), "replaces": root.pk, "stuck": action.pk},
                     reason=reason)
    return replacement
