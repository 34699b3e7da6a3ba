"""Executing an approved owner action: simulate again, sign and record, then broadcast the recorded bytes."""
from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import effects, transactions
from chain import safe as chain_safe
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ActionStatus,
    ContractAction,
    Custody,
    SignerNonce,
)

from . import counting, simulations, stale, transitions

logger = logging.getLogger(__name__)


REPLACEMENT_BUMP = 1.125  # a replacement must raise both fees by at least 12.5% (EIP-1559 pool rule)


def _allocate_nonce(chain: str, signer: str) -> int:
    """Next nonce of the signer, under a row lock. Starts from (and catches up with) the chain's pending count."""
    on_chain = transactions.nonce_of(chain, signer, "pending")
    row, _ = SignerNonce.objects.select_for_update().get_or_create(chain=chain, address=signer,
                                                                    defaults={"next_nonce": on_chain})
    nonce = max(row.next_nonce, on_chain)
    row.next_nonce = nonce + 1
    row.save(update_fields=["next_nonce"])
    return nonce


def execute_contract_action(*, actor: Any, action: ContractAction, acknowledge_effects: bool = False) -> ContractAction:
    """Simulate again, sign and record, then broadcast. Returns the action in its new state:
    rejected (the simulation reverted: nothing signed), stale (a Safe nonce consumed elsewhere:
    nothing signed), signed (broadcast pending: the recovery step will send the recorded bytes) or sent.

    Safe custody: the signatures are verified against the Safe's owners and threshold read now, the
    execTransaction is simulated with eth_call, and the relayer signs it. Refused before anything is
    signed when the owners changed so that the signatures no longer reach the threshold.

    The very transaction about to be sent is first run on a fork of the chain at its head (not for rule-bound
    automation: the automatic pause must not wait); its state changes are recorded as `execution_effects`. When
    they differ from those simulated at proposal (the chain moved), it is refused, nothing signed, unless
    `acknowledge_effects` says the executor read the differences (recorded with who acknowledged them). A guardian
    pause is the exception: its one signature sends it at once from the signing page, and the proposal's fork paused
    as the module's first guardian, not the one who signed; its differences are recorded and shown, never waited on.
    """
    require_perm(actor, "ops.execute_contractaction", "execute contract actions")
    action.refresh_from_db()
    if action.status != ActionStatus.APPROVED:
        raise ValidationError({"status": f"Action #{action.pk} is {action.get_status_display().lower()}: "
                                         "only an approved action can be executed."})
    cfg = get_chain_config(action.chain)
    role = transitions.ROLE[action.custody]
    signer = transitions.server_signer(role)
    tx_data = action.tx_data or action.calldata
    if action.custody in (Custody.SAFE, Custody.GUARDIAN) and not action.replaces_id:
        prepared = _prepare_signed_call(action)
        if isinstance(prepared, ContractAction):
            return prepared  # stale, or sent back for signatures
        tx_data = prepared
    simulation = simulations.simulate_call(action.chain, action.to_address, action.calldata,
                                           simulations.simulation_sender(action))
    if simulation.ok and (tx_data != action.calldata or (action.tx_to or action.to_address) != action.to_address):
        # The outer call too (execTransaction / pauseBySignature from the relayer, the module's pause() from the
        # guardian key: the same selector as the escrow's, another contract): the signatures, and its gas, count.
        outer = simulations.simulate_call(action.chain, action.tx_to, tx_data, signer)
        simulation = outer if not outer.ok else simulation
        gas_hint = outer.gas
    else:
        gas_hint = simulation.gas
    pre_send, differ = None, []
    if simulation.ok and not action.is_automatic and not action.replaces_id:
        pre_send = simulations.simulate_effects(chain=action.chain, order_id=action.order_onchain_id,
                                                token=action.params.get("token"),
                                                call=simulations.action_fork_call(action, tx_data=tx_data))
        differ = effects.differences(action.proposal_effects, pre_send)
        if differ and not acknowledge_effects and action.custody != Custody.GUARDIAN:
            raise ValidationError({"acknowledge_effects": "What this call changes differs from what was simulated at "
                                   "proposal (the chain moved): " + "; ".join(differ) + ". Read the state changes "
                                   "on the execute page and tick the acknowledgement to send it all the same, or "
                                   "reject the action. Nothing was signed."})
        if pre_send.get("method") == "fork" and not pre_send.get("ok"):
            simulation = transactions.Simulation(ok=False, gas=None, reason=f"on a fork: {pre_send.get('reason')}",
                                                 block=pre_send.get("block"))
    # Automation is audited as the rule that ran it: the keeper's label, or the one it names (system:auto-pause).
    actor_label = actor if not action.is_automatic else (actor if isinstance(actor, str) else transitions.SYSTEM)
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status != ActionStatus.APPROVED:
            raise ValidationError({"status": f"Action #{action.pk} was {action.get_status_display().lower()} "
                                             "meanwhile: nothing was sent."})
        before = transitions.snapshot(action)
        action.execution_simulation = simulation.as_dict()
        action.executed_by = actor if getattr(actor, "pk", None) else None
        if pre_send is not None:
            action.execution_effects, action.effects_differences = pre_send, differ
            action.effects_acknowledged_by = action.executed_by if differ and acknowledge_effects else None
        if not simulation.ok:
            action.status = ActionStatus.REJECTED
            action.outcome = f"simulation before signing reverted: {simulation.reason}"
            action.save(update_fields=["status", "outcome", "execution_simulation", "executed_by",
                                       "execution_effects", "effects_differences", "effects_acknowledged_by"])
            record_audit(actor=actor_label, action="execute_contract_action", obj=action, before=before,
                         after=transitions.snapshot(action), reason=action.outcome)
            return action
        try:
            if action.replaces_id:
                # Same nonce; both fees raised at least 12.5% over the highest attempt so far.
                attempts = [a for a in nonce_group(action.replaces) if a.raw_tx]
                nonce = action.replaces.nonce
                top_fee = max(int(a.max_fee_per_gas) for a in attempts)
                top_tip = max(int(a.max_priority_fee_per_gas) for a in attempts)
                tip = math.ceil(top_tip * REPLACEMENT_BUMP) + 1
                max_fee = max(transactions.fee_quote(action.chain)[0], math.ceil(top_fee * REPLACEMENT_BUMP) + 1, tip)
                gas = max(a.gas_limit for a in attempts)
            else:
                nonce = _allocate_nonce(action.chain, signer)
                max_fee, tip = transactions.fee_quote(action.chain)
                gas = int((gas_hint or simulation.gas) * 1.25) + 10_000
        except (ProviderUnavailable, RpcError) as exc:
            raise ValidationError({"chain": f"{action.chain} RPC unreachable, nothing was signed: {exc}"}) from None
        outer_to = action.tx_to or action.to_address
        signed = transactions.sign(chain_id=cfg.chain_id, to=outer_to, data=tx_data, nonce=nonce,
                                   gas=gas, max_fee=max_fee, priority_fee=tip, role=role)
        action.signer_address, action.nonce, action.gas_limit = signer, nonce, gas
        action.max_fee_per_gas, action.max_priority_fee_per_gas = max_fee, tip
        action.raw_tx, action.tx_hash, action.signed_at = signed.raw, signed.tx_hash, timezone.now()
        action.tx_to, action.tx_data = outer_to, tx_data
        action.status = ActionStatus.SIGNED
        action.save()
        how = "acknowledged" if acknowledge_effects else "a guardian pause, not held"
        record_audit(actor=actor_label, action="sign_contract_action", obj=action, before=before,
                     after=transitions.snapshot(action),
                     reason=action.reason + (f" [state changes differ from proposal, {how}: {'; '.join(differ)}]"
                                             if differ else ""))
    return send_signed_action(action=action)


def _prepare_signed_call(action: ContractAction) -> str | ContractAction:
    """The relayer's calldata for a Safe or guardian action, from the signatures that hold *now*.

    Returns the action instead when it cannot be sent: stale (its nonce was consumed), or sent back
    to collecting signatures (the owners or threshold changed since they were given).
    """
    try:
        signers = counting.current_signers(action)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{action.chain} RPC unreachable, nothing was signed: {exc}"}) from None
    if signers.nonce > action.safe_nonce:
        stale.mark_stale_actions(chain=action.chain)
        action.refresh_from_db()
        return action
    if signers.nonce < action.safe_nonce:
        raise ValidationError({"safe_nonce": f"The Safe's nonce is {signers.nonce}: the SafeTx with nonce "
                                             f"{signers.nonce} must execute (or be replaced) before #{action.pk}."})
    counted = counting.tally(action, signers)
    if not counted.met:
        why = "; ".join(counted.invalid) or "too few signatures"
        outcome = (f"execution refused before sending: {len(counted.valid)} valid signature(s) of "
                   f"{signers.threshold} needed ({why}); collect more signatures")
        transitions.mark_action(action, ActionStatus.PROPOSED, only_from=(ActionStatus.APPROVED,), outcome=outcome,
                    audit_reason=outcome)
        raise ValidationError({"signatures": outcome[0].upper() + outcome[1:] + "."})
    if action.custody == Custody.GUARDIAN:
        deadline = action.guardian_deadline_seconds
        try:
            chain_now = transactions.chain_time(action.chain)
        except (ProviderUnavailable, RpcError) as exc:
            raise ValidationError({"chain": f"{action.chain} RPC unreachable, nothing was signed: {exc}"}) from None
        if deadline <= chain_now:
            raise ValidationError({"signatures": "The guardian's pause signature expired: start the pause again."})
        return chain_safe.pause_by_signature_calldata(deadline=deadline, signature=next(iter(counted.valid.values())))
    return chain_safe.exec_transaction_calldata(to=action.to_address, data=action.calldata,
                                                signatures=chain_safe.pack_signatures(counted.valid))


def send_signed_action(*, action: ContractAction) -> ContractAction:
    """Broadcast the recorded bytes; on success mark sent. A failure leaves it signed for the recovery step."""
    try:
        transactions.broadcast(action.chain, action.raw_tx, action.tx_hash)
    except (ProviderUnavailable, RpcError) as exc:
        logger.error("broadcast of contract action %s failed, will retry: %s", action.pk, exc,
                     extra={"chain": action.chain, "tx_hash": action.tx_hash})
        return action
    return transitions.mark_action(action, ActionStatus.SENT, sent_at=timezone.now(), only_from=(ActionStatus.SIGNED,))


def nonce_group(root: ContractAction) -> list[ContractAction]:
    """The original action and every replacement of it: all share one nonce."""
    return list(ContractAction.objects.filter(Q(pk=root.pk) | Q(replaces=root)).order_by("pk"))


def others_with_nonce(action: ContractAction) -> list[ContractAction]:
    root = action.replaces if action.replaces_id else action
    return [a for a in nonce_group(root) if a.pk != action.pk]
