"""Contract actions: propose, approve, execute (simulate → sign and record → broadcast), advance, replace.

Exactly-once sending rests on one rule: the signed bytes, their hash and nonce are committed
*before* anything is broadcast, and afterwards only those same bytes are ever sent again. So a
crash after signing, after broadcast, or after the receipt is finished by `advance_contract_actions`
(the recovery step, also run by beat) with no second on-chain effect: re-sending identical bytes
cannot execute twice, and a nonce can be used once.
"""
from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from eth_utils import keccak

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import calls, transactions
from chain import safe as chain_safe
from chain.config import ChainConfig, get_chain_config
from chain.rpc import ProviderUnavailable, RpcError

from . import custody
from .models import AWAITING, IN_FLIGHT, ActionStatus, ContractAction, Custody, PlatformFlag, SignerNonce

logger = logging.getLogger(__name__)

REPLACEMENT_BUMP = 1.125  # a replacement must raise both fees by at least 12.5% (EIP-1559 pool rule)
SYSTEM = "system:timeouts"


def _snapshot(action: ContractAction) -> dict[str, Any]:
    return {"status": action.status, "chain": action.chain, "call": action.description,
            "calldata_hash": action.calldata_hash, "nonce": action.nonce, "tx_hash": action.tx_hash,
            "approved_by": action.approved_by_id, "outcome": action.outcome, "custody": action.custody,
            "safe_nonce": action.safe_nonce, "signing_hash": action.signing_hash or None}


# The server key that signs the transaction of each custody route (none signs as an owner in safe mode).
ROLE = {Custody.OWNER_KEY: "owner", Custody.SAFE: "relayer", Custody.GUARDIAN: "relayer", Custody.KEEPER: "keeper"}


def _signer(role: str = "owner") -> str:
    try:
        return transactions.signer_address(role)
    except transactions.SignerUnavailable as exc:
        raise ValidationError({"signer": str(exc)}) from None


def _simulate(chain: str, to: str, data: str, sender: str) -> transactions.Simulation:
    try:
        return transactions.simulate(chain, to=to, data=data, sender=sender)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{chain} RPC unreachable, nothing was done: {exc}"}) from None


def _safe_of(cfg: ChainConfig) -> chain_safe.SafeState:
    """The Safe that owns the chain's contracts, read from the chain; refuses an EOA owner in safe mode."""
    try:
        owner = chain_safe.owner_of(cfg.key, cfg.escrow)
        if not chain_safe.has_code(cfg.key, owner):
            raise ValidationError({"chain": f"{cfg.key}'s owner mode is safe, but the escrow's owner {owner} is a "
                                            f"plain account, not a Safe: transfer ownership to the Safe (README, "
                                            f"'Moving to a Safe') or set {cfg.key.upper()[:3]}_OWNER_MODE=eoa."})
        return chain_safe.read_safe(cfg.key, owner)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{cfg.key} RPC unreachable, nothing was done: {exc}"}) from None


def simulation_sender(action: ContractAction) -> str:
    """Who makes the contract call: the Safe in safe custody, else the signing key's address."""
    if action.custody in (Custody.SAFE, Custody.GUARDIAN):
        return action.safe_address
    return _signer(ROLE[action.custody])


def simulate_action(action: ContractAction) -> dict[str, Any]:
    """A fresh eth_call of the action's contract call, for confirmation pages (never raises)."""
    try:
        sim = transactions.simulate(action.chain, to=action.to_address, data=action.calldata,
                                    sender=simulation_sender(action))
        return sim.as_dict()
    except (ValidationError, ProviderUnavailable, RpcError) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        return {"ok": False, "reason": f"could not simulate: {text}", "gas": None, "block": None}


def propose_contract_action(*, actor: Any, chain: str, kind: str, params: dict[str, Any], reason: str,
                            order_onchain_id: int | None = None, group: str = "",
                            automatic: bool = False, safe_nonce: int | None = None,
                            safe_address: str = "") -> ContractAction:
    """Validate, encode and simulate an owner call, and record it as proposed (audited).

    Raises ValidationError naming the field for bad parameters, a missing reason, an unconfigured
    chain, a Safe other than `safe_address` or no longer at `safe_nonce` (when given: a cancel targets one nonce
    of one Safe), or a simulation that reverts (with the decoded reason); nothing is written then.
    """
    require_perm(actor, "ops.add_contractaction", "propose contract actions")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why this call is needed."})
    cfg = get_chain_config(chain)
    if not cfg.is_configured:
        raise ValidationError({"chain": f"{chain} is not configured: set its RPC URL and contract addresses."})
    cleaned = calls.clean_params(kind, params)
    data = calls.encode(kind, cleaned)
    contract = calls.KINDS[kind].contract
    to = (cfg.arbitrator_pool if contract == "pool" else cfg.escrow).lower()
    route = Custody.KEEPER if automatic else Custody.SAFE if cfg.is_safe else Custody.OWNER_KEY
    if contract == "safe" and route != Custody.SAFE:
        raise ValidationError({"kind": f"{calls.KINDS[kind].label} is for Safe custody only: {chain}'s owner is "
                                       "not a Safe, nothing was proposed."})
    fixed: dict[str, Any] = {"tx_to": to}
    if route == Custody.SAFE:
        state = _safe_of(cfg)
        sender = state.address
        if contract == "safe":
            to = state.address
        if safe_address and state.address != safe_address.lower():
            raise ValidationError({"safe_nonce": f"The escrow is now owned by {state.address}, not the Safe "
                                                 f"{safe_address}: a SafeTx of the old Safe is cancelled with the old "
                                                 "Safe's own tools; nothing was proposed."})
        if safe_nonce is not None and state.nonce != safe_nonce:
            why = ("was used: the SafeTx on it can no longer execute" if state.nonce > safe_nonce else
                   f"is not reached yet: the Safe is at nonce {state.nonce}")
            raise ValidationError({"safe_nonce": f"Safe nonce {safe_nonce} {why}; nothing was proposed."})
        typed = chain_safe.safe_tx_typed_data(chain_id=cfg.chain_id, safe=state.address, to=to, data=data,
                                              nonce=state.nonce)
        digest = chain_safe.typed_data_hash(typed)
        try:
            on_chain = chain_safe.confirm_safe_tx_hash(chain, state.address, to=to, data=data, nonce=state.nonce)
        except (ProviderUnavailable, RpcError) as exc:
            raise ValidationError({"chain": f"{chain} RPC unreachable, nothing was proposed: {exc}"}) from None
        if on_chain != digest:
            raise ValidationError({"chain": f"The Safe {state.address} computes SafeTx hash {on_chain}, we computed "
                                            f"{digest}: it is not a Safe v1.3+/1.4.1; nothing was proposed."})
        fixed = {"tx_to": state.address, "safe_address": state.address, "safe_nonce": state.nonce,
                 "typed_data": typed, "signing_hash": digest}
    else:
        sender = _signer(ROLE[route])
    simulation = _simulate(chain, to, data, sender)
    if not simulation.ok and not automatic:
        raise ValidationError({"params": f"The call would revert ({simulation.reason}): nothing was proposed."})
    if "order_id" in cleaned:
        order_onchain_id = cleaned["order_id"]
    with transaction.atomic():
        if route == Custody.SAFE:
            _refuse_open_safe_tx(fixed["signing_hash"])
        try:
            with transaction.atomic():
                action = ContractAction.objects.create(
                    chain=chain, kind=kind, params=cleaned, description=calls.describe(kind, cleaned)[:300],
                    to_address=to, calldata=data, calldata_hash="0x" + keccak(hexstr=data).hex(), reason=reason,
                    is_automatic=automatic, order_onchain_id=order_onchain_id, group=group,
                    proposed_by=None if automatic else actor, proposal_simulation=simulation.as_dict(),
                    custody=route,
                    # Rule-bound automation is approved by its rule; everything else waits for a second person.
                    status=(ActionStatus.REJECTED if not simulation.ok else
                            ActionStatus.APPROVED if automatic else ActionStatus.PROPOSED),
                    outcome="" if simulation.ok else f"simulation reverted: {simulation.reason}", **fixed)
        except IntegrityError:
            if route == Custody.SAFE:  # the same SafeTx proposed at the same moment: name the one that won
                _refuse_open_safe_tx(fixed["signing_hash"])
            raise
        record_audit(actor=actor if not automatic else SYSTEM, action="propose_contract_action", obj=action,
                     after=_snapshot(action), reason=reason)
    return action


def _refuse_open_safe_tx(signing_hash: str) -> None:
    """One open action per SafeTx: a second would let owners' signatures gather on the same hash outside the
    review of the first (each action counts its own signatures). The database holds the rule (the constraint
    contract_actions_one_open_per_safe_tx); this check names the open action in the refusal."""
    open_action = _open_safe_tx(signing_hash)
    if open_action is not None:
        raise ValidationError({"params": f"Action #{open_action.pk} ({open_action.description}, "
                                         f"{open_action.get_status_display().lower()}) is this same SafeTx (Safe "
                                         f"nonce {open_action.safe_nonce}, hash {signing_hash}): sign, execute or "
                                         f"reject #{open_action.pk} instead; nothing was proposed."})


def _open_safe_tx(signing_hash: str, *, besides: int | None = None) -> ContractAction | None:
    """The open Safe action of this SafeTx (the index allows one), other than action `besides`."""
    return (ContractAction.objects.filter(custody=Custody.SAFE, signing_hash=signing_hash,
                                          status__in=[*AWAITING, *IN_FLIGHT]).exclude(pk=besides).order_by("pk").first())


def propose_safe_tx_cancel(*, actor: Any, action: ContractAction, reason: str) -> ContractAction:
    """Propose the Safe's own rejection of a rejected SafeTx: a SafeTx to the Safe itself, no data, on the same
    nonce. Rejecting an action in the back office does not void its owners' signatures: whoever holds enough
    of them can still execute it until that Safe nonce is used. The cancel needs the threshold like any SafeTx.

    Refused (nothing proposed) unless `action` is a closed SafeTx (`selectors.exposed_safe_txs`: rejected, or
    failed without using its nonce, and not open again under another action) whose Safe still owns the escrow
    and is at its nonce now.
    """
    from .selectors import exposed_safe_txs

    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why the SafeTx must never execute."})
    if action.kind == "cancel_safe_tx":
        raise ValidationError({"kind": f"#{action.pk} is itself a cancel: it is made harmless by executing the action "
                                       f"wanted on Safe nonce {action.safe_nonce}."})
    if not exposed_safe_txs().filter(pk=action.pk).exists():
        again = _open_safe_tx(action.signing_hash, besides=action.pk) if action.custody == Custody.SAFE else None
        why = (f"the same SafeTx is open again as #{again.pk}: reject that one first" if again
               else "only a rejected or failed SafeTx is cancelled on chain (reject it first)")
        raise ValidationError({"status": f"Action #{action.pk} is a {action.get_custody_display()} action, "
                                         f"{action.get_status_display().lower()}: {why}."})
    return propose_contract_action(actor=actor, chain=action.chain, kind="cancel_safe_tx", params={},
                                   reason=f"{reason} (cancels #{action.pk} at Safe nonce {action.safe_nonce})",
                                   safe_nonce=action.safe_nonce, safe_address=action.safe_address)


def approve_contract_action(*, actor: Any, action: ContractAction) -> ContractAction:
    """Second pair of eyes. The proposer cannot approve their own action (also refused by the database)."""
    require_perm(actor, "ops.approve_contractaction", "approve contract actions")
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status != ActionStatus.PROPOSED:
            raise ValidationError({"status": f"Action #{action.pk} is {action.get_status_display().lower()}: "
                                             "only a proposed action can be approved."})
        if action.custody in (Custody.SAFE, Custody.GUARDIAN):
            raise ValidationError({"approved_by": f"Action #{action.pk} goes through the Safe: approve it by signing "
                                                  "the SafeTx with your registered owner key."})
        if action.proposed_by_id == getattr(actor, "pk", None) and action.kind != "pause":
            raise ValidationError({"approved_by": "You proposed this action: a different person must approve it."})
        before = _snapshot(action)
        action.status, action.approved_by, action.approved_at = ActionStatus.APPROVED, actor, timezone.now()
        action.save(update_fields=["status", "approved_by", "approved_at"])
        record_audit(actor=actor, action="approve_contract_action", obj=action, before=before,
                     after=_snapshot(action), reason=action.reason)
    return action


def reject_contract_action(*, actor: Any, action: ContractAction, reason: str) -> ContractAction:
    require_perm(actor, "ops.approve_contractaction", "reject contract actions")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to reject an action."})
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status not in AWAITING:
            raise ValidationError({"status": f"Action #{action.pk} is already {action.get_status_display().lower()}."})
        before = _snapshot(action)
        action.status, action.outcome = ActionStatus.REJECTED, f"rejected: {reason}"
        action.save(update_fields=["status", "outcome"])
        record_audit(actor=actor, action="reject_contract_action", obj=action, before=before, after=_snapshot(action),
                     reason=reason)
    return action


def _allocate_nonce(chain: str, signer: str) -> int:
    """Next nonce of the signer, under a row lock. Starts from (and catches up with) the chain's pending count."""
    on_chain = transactions.nonce_of(chain, signer, "pending")
    row, _ = SignerNonce.objects.select_for_update().get_or_create(chain=chain, address=signer,
                                                                    defaults={"next_nonce": on_chain})
    nonce = max(row.next_nonce, on_chain)
    row.next_nonce = nonce + 1
    row.save(update_fields=["next_nonce"])
    return nonce


def execute_contract_action(*, actor: Any, action: ContractAction) -> ContractAction:
    """Simulate again, sign and record, then broadcast. Returns the action in its new state:
    rejected (the simulation reverted: nothing signed), stale (a Safe nonce consumed elsewhere:
    nothing signed), signed (broadcast pending: the recovery step will send the recorded bytes) or sent.

    Safe custody: the signatures are verified against the Safe's owners and threshold read now, the
    execTransaction is simulated with eth_call, and the relayer signs it. Refused before anything is
    signed when the owners changed so that the signatures no longer reach the threshold.
    """
    require_perm(actor, "ops.execute_contractaction", "execute contract actions")
    action.refresh_from_db()
    if action.status != ActionStatus.APPROVED:
        raise ValidationError({"status": f"Action #{action.pk} is {action.get_status_display().lower()}: "
                                         "only an approved action can be executed."})
    cfg = get_chain_config(action.chain)
    role = ROLE[action.custody]
    signer = _signer(role)
    tx_data = action.tx_data or action.calldata
    if action.custody in (Custody.SAFE, Custody.GUARDIAN) and not action.replaces_id:
        prepared = _prepare_signed_call(action)
        if isinstance(prepared, ContractAction):
            return prepared  # stale, or sent back for signatures
        tx_data = prepared
    simulation = _simulate(action.chain, action.to_address, action.calldata, simulation_sender(action))
    if simulation.ok and tx_data != action.calldata:
        # The outer call too (execTransaction / pauseBySignature from the relayer): the signatures must pass.
        outer = _simulate(action.chain, action.tx_to, tx_data, signer)
        simulation = outer if not outer.ok else simulation
        gas_hint = outer.gas
    else:
        gas_hint = simulation.gas
    actor_label = actor if not action.is_automatic else SYSTEM
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status != ActionStatus.APPROVED:
            raise ValidationError({"status": f"Action #{action.pk} was {action.get_status_display().lower()} "
                                             "meanwhile: nothing was sent."})
        before = _snapshot(action)
        action.execution_simulation = simulation.as_dict()
        action.executed_by = actor if getattr(actor, "pk", None) else None
        if not simulation.ok:
            action.status, action.outcome = ActionStatus.REJECTED, f"simulation before signing reverted: {simulation.reason}"
            action.save(update_fields=["status", "outcome", "execution_simulation", "executed_by"])
            record_audit(actor=actor_label, action="execute_contract_action", obj=action, before=before,
                         after=_snapshot(action), reason=action.outcome)
            return action
        try:
            if action.replaces_id:
                # Same nonce; both fees raised at least 12.5% over the highest attempt so far.
                attempts = [a for a in _nonce_group(action.replaces) if a.raw_tx]
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
        record_audit(actor=actor_label, action="sign_contract_action", obj=action, before=before,
                     after=_snapshot(action), reason=action.reason)
    return send_signed_action(action=action)


def _prepare_signed_call(action: ContractAction) -> str | ContractAction:
    """The relayer's calldata for a Safe or guardian action, from the signatures that hold *now*.

    Returns the action instead when it cannot be sent: stale (its nonce was consumed), or sent back
    to collecting signatures (the owners or threshold changed since they were given).
    """
    try:
        signers = custody.current_signers(action)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{action.chain} RPC unreachable, nothing was signed: {exc}"}) from None
    if signers.nonce > action.safe_nonce:
        custody.mark_stale_actions(chain=action.chain)
        action.refresh_from_db()
        return action
    if signers.nonce < action.safe_nonce:
        raise ValidationError({"safe_nonce": f"The Safe's nonce is {signers.nonce}: the SafeTx with nonce "
                                             f"{signers.nonce} must execute (or be replaced) before #{action.pk}."})
    counted = custody.tally(action, signers)
    if not counted.met:
        why = "; ".join(counted.invalid) or "too few signatures"
        outcome = (f"execution refused before sending: {len(counted.valid)} valid signature(s) of "
                   f"{signers.threshold} needed ({why}); collect more signatures")
        mark_action(action, ActionStatus.PROPOSED, only_from=(ActionStatus.APPROVED,), outcome=outcome,
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
    return mark_action(action, ActionStatus.SENT, sent_at=timezone.now(), only_from=(ActionStatus.SIGNED,))


def mark_action(action: ContractAction, status: str, *, only_from: tuple[str, ...], audit_reason: str = "",
                **fields: Any) -> ContractAction:
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status not in only_from:
            return action
        before = _snapshot(action)
        action.status = status
        for key, value in fields.items():
            setattr(action, key, value)
        action.save(update_fields=["status", *fields])
        record_audit(actor="system:actions", action=f"mark_contract_action_{status}", obj=action, before=before,
                     after=_snapshot(action), reason=audit_reason)
    return action


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
    counts["stale"] = custody.mark_stale_actions(chain=chain)
    return counts


def _advance_one(action: ContractAction, counts: dict[str, int]) -> None:
    receipt = transactions.receipt(action.chain, action.tx_hash)
    if receipt is None and transactions.nonce_of(action.chain, action.signer_address, "latest") > action.nonce:
        # The nonce is used, but the receipt was read first: this very transaction may have been mined
        # between the two reads, or the provider that answered the receipt lags (after a failover). Read
        # it again before blaming another transaction, or a mined, successful action would become failed.
        receipt = transactions.receipt(action.chain, action.tx_hash)
        if receipt is None:
            winner = next((a for a in _others_with_nonce(action) if a.tx_hash
                           and transactions.receipt(action.chain, a.tx_hash) is not None), None)
            if winner is not None:
                mark_action(action, ActionStatus.REPLACED, only_from=IN_FLIGHT,
                      outcome=f"nonce {action.nonce} used by action #{winner.pk}")
                counts["replaced"] += 1
            else:
                failed = mark_action(action, ActionStatus.FAILED, only_from=IN_FLIGHT,
                                     outcome=f"nonce {action.nonce} was used by another transaction of the signer")
                counts["failed"] += 1
                _alert_failed(failed)
            return
    if receipt is None:
        if action.status == ActionStatus.SIGNED or not transactions.tx_known(action.chain, action.tx_hash):
            # Crashed before (or lost after) the broadcast: send the very same bytes again.
            if send_signed_action(action=action).status == ActionStatus.SENT and action.status == ActionStatus.SIGNED:
                counts["sent"] += 1
        return
    if action.status == ActionStatus.SIGNED:
        mark_action(action, ActionStatus.SENT, only_from=(ActionStatus.SIGNED,), sent_at=timezone.now())
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
            action = mark_action(action, ActionStatus.CONFIRMED, only_from=(ActionStatus.SENT,),
                                 receipt_block=receipt["block"], confirmed_at=timezone.now())
            counts["confirmed"] += 1
        else:
            action = mark_action(action, ActionStatus.FAILED, only_from=(ActionStatus.SENT,),
                                 receipt_block=receipt["block"], outcome="the transaction reverted on chain (receipt "
                                                                         "status 0)")
            counts["failed"] += 1
        for other in _others_with_nonce(action):
            if other.status in AWAITING:
                mark_action(other, ActionStatus.REJECTED, only_from=AWAITING,
                      outcome=f"not needed: action #{action.pk} with the same nonce was mined")
            elif other.status in IN_FLIGHT:
                mark_action(other, ActionStatus.REPLACED, only_from=IN_FLIGHT,
                      outcome=f"nonce {action.nonce} used by action #{action.pk}")
                counts["replaced"] += 1
        _finish_resume(action)
    _alert_failed(action)


def _alert_failed(action: ContractAction) -> None:
    """A failed action pages (after its own transaction): an emergency pause through the guardian module a P1
    (the escrow was not paused by it), any other staff action a P2 (staff believe it done; it changed nothing)."""
    if action.status != ActionStatus.FAILED or action.is_automatic:
        return  # a keeper's timeout call loses races by design (anyone may call it); it is proposed again anyway
    if action.custody == Custody.GUARDIAN:
        custody.alert_pause_not_done(action, f"its transaction failed ({action.outcome})")
        return
    raise_alert(key=f"action-failed:{action.chain}:{action.pk}", severity="P2", source="contract_actions",
                title=f"{action.chain}: contract action #{action.pk} failed on chain",
                message=f"#{action.pk} {action.description}: {action.outcome}. It changed nothing on chain: propose "
                        "it again if it is still needed.")


def _nonce_group(root: ContractAction) -> list[ContractAction]:
    """The original action and every replacement of it: all share one nonce."""
    return list(ContractAction.objects.filter(Q(pk=root.pk) | Q(replaces=root)).order_by("pk"))


def _others_with_nonce(action: ContractAction) -> list[ContractAction]:
    root = action.replaces if action.replaces_id else action
    return [a for a in _nonce_group(root) if a.pk != action.pk]


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
                    tx_to=root.tx_to, tx_data=root.tx_data, **signed_payload)
        except IntegrityError:  # someone else replaced it at the same moment (one pending replacement per nonce)
            raise busy from None
        record_audit(actor=actor, action="replace_contract_action", obj=replacement,
                     after={**_snapshot(replacement), "replaces": root.pk, "stuck": action.pk}, reason=reason)
    return replacement


def propose_guardian_pause(*, actor: Any, chain: str, reason: str, group: str = "") -> ContractAction:
    """RB-05 in safe custody: a pause through the guardian module, waiting for one guardian's signature.

    The typed data (module nonce, deadline) is fixed now and checked against the module's own digest;
    `custody.add_action_signature` with a guardian's signature executes it at once (the relayer sends it).
    """
    require_perm(actor, "ops.execute_contractaction", "pause the escrow")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why trading must stop."})
    cfg = get_chain_config(chain)
    if not cfg.guardian_module:
        raise ValidationError({"chain": f"{chain} has no guardian module: set {cfg.key.upper()[:3]}_GUARDIAN_MODULE "
                                        "(or pause through the Safe threshold: propose a pause action)."})
    state = _safe_of(cfg)
    try:
        guardian = chain_safe.read_guardians(chain, cfg.guardian_module, state.address)
        # The module checks the deadline against block.timestamp: count from the chain's clock, not ours.
        deadline = transactions.chain_time(chain) + settings.GUARDIAN_PAUSE_SECONDS
        typed = chain_safe.guardian_pause_typed_data(chain_id=cfg.chain_id, module=cfg.guardian_module,
                                                     escrow=cfg.escrow, nonce=guardian.nonce, deadline=deadline)
        digest = chain_safe.typed_data_hash(typed)
        on_chain = chain_safe.pause_digest(chain, cfg.guardian_module, deadline)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{chain} RPC unreachable, nothing was proposed: {exc}"}) from None
    if not guardian.enabled:
        raise ValidationError({"chain": f"The guardian module {cfg.guardian_module} is not enabled on the Safe "
                                        f"{state.address}: enable it through the Safe first."})
    if on_chain != digest:
        raise ValidationError({"chain": f"The guardian module computes {on_chain}, we computed {digest}: "
                                        f"{cfg.guardian_module} is not a PauseGuardianModule for this escrow."})
    data = calls.encode("pause", {})
    simulation = _simulate(chain, cfg.escrow.lower(), data, state.address)
    if not simulation.ok:
        raise ValidationError({"params": f"The pause would revert ({simulation.reason}): nothing was proposed."})
    with transaction.atomic():
        action = ContractAction.objects.create(
            chain=chain, kind="pause", params={}, description=calls.describe("pause", {}), to_address=cfg.escrow.lower(),
            calldata=data, calldata_hash="0x" + keccak(hexstr=data).hex(), reason=reason, group=group,
            proposed_by=actor, proposal_simulation=simulation.as_dict(), custody=Custody.GUARDIAN,
            tx_to=cfg.guardian_module.lower(), safe_address=state.address, safe_nonce=guardian.nonce,
            typed_data=typed, signing_hash=digest)
        record_audit(actor=actor, action="propose_contract_action", obj=action, after=_snapshot(action),
                     reason=reason)
    return action


def pause_now(*, actor: Any, chain: str, reason: str, group: str = "") -> ContractAction:
    """RB-05: one operator pauses at once. eoa custody: proposed, self-approved (allowed for pause only),
    executed with the owner key. Safe custody: a guardian pause, waiting for that operator's signature."""
    require_perm(actor, "ops.execute_contractaction", "pause the escrow")
    if get_chain_config(chain).is_safe:
        return propose_guardian_pause(actor=actor, chain=chain, reason=reason, group=group)
    action = propose_contract_action(actor=actor, chain=chain, kind="pause", params={}, reason=reason, group=group)
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        action.status, action.approved_by, action.approved_at = ActionStatus.APPROVED, actor, timezone.now()
        action.save(update_fields=["status", "approved_by", "approved_at"])
        record_audit(actor=actor, action="approve_contract_action", obj=action, after=_snapshot(action),
                     reason="RB-05: an emergency pause needs no second approver")
    return execute_contract_action(actor=actor, action=action)


# ---------------------------------------------------------------------------- kill switch


def flag_value_problem(flag: PlatformFlag, value: Any) -> str:
    """What is wrong with `value` for `flag`, or "": a switch stays a switch (1 or "true" would read as on to
    some code and not to other). The flag form shows it on its field; `set_platform_flag` enforces it."""
    if isinstance(flag.value, bool) and not isinstance(value, bool):
        return f"{flag.key} is a switch: true or false (JSON), not {value!r}."
    return ""


def set_platform_flag(*, actor: Any, key: str, value: Any, reason: str) -> PlatformFlag:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to change a platform setting."})
    with transaction.atomic():
        flag = PlatformFlag.objects.select_for_update().filter(key=key).first()
        if flag is None:
            raise ValidationError({"key": f"Unknown platform setting {key!r}."})
        problem = flag_value_problem(flag, value)
        if problem:
            raise ValidationError({"value": problem})
        before = {"value": flag.value}
        flag.value, flag.updated_by = value, actor if getattr(actor, "pk", None) else None
        flag.save(update_fields=["value", "updated_by", "updated_at"])
        record_audit(actor=actor, action="set_platform_flag", obj=flag, before=before, after={"value": value},
                     reason=reason)
    return flag


def emergency_stop(*, actor: Any, reason: str, chains: list[str]) -> list[ContractAction]:
    """Swap runbook kill switch + RB-05: TRADES_ENABLED off and a pause on every chain, at once.

    A chain already paused is skipped (its simulation reverts); the flag is set regardless.
    """
    require_perm(actor, "ops.execute_contractaction", "trigger the emergency stop")
    group = f"stop-{uuid.uuid4().hex[:12]}"
    set_platform_flag(actor=actor, key="TRADES_ENABLED", value=False, reason=f"emergency stop: {reason}")
    actions = []
    for chain in chains:
        try:
            actions.append(pause_now(actor=actor, chain=chain, reason=f"emergency stop: {reason}", group=group))
        except ValidationError as exc:
            logger.warning("emergency stop: %s not paused: %s", chain, "; ".join(exc.messages), extra={"chain": chain})
    return actions


def request_resume(*, actor: Any, reason: str, chains: list[str]) -> list[ContractAction]:
    """Propose unpause on every paused chain; `approve_resume` by someone else executes them."""
    group = f"resume-{uuid.uuid4().hex[:12]}"
    proposed, skipped = [], []
    for chain in chains:
        try:
            proposed.append(propose_contract_action(actor=actor, chain=chain, kind="unpause", params={},
                                                    reason=f"resume: {reason}", group=group))
        except ValidationError as exc:
            logger.info("resume: %s skipped: %s", chain, "; ".join(exc.messages), extra={"chain": chain})
            skipped.append(f"{chain}: {'; '.join(exc.messages)}")
    if not proposed:
        # Not always "not paused": an unpause already waiting for signatures is refused too (one open action
        # per SafeTx), and the person must be sent to it.
        raise ValidationError({"chains": "Nothing to resume: no unpause was proposed ("
                                         + " | ".join(skipped or ["no chain"]) + ")."})
    return proposed


def approve_resume(*, actor: Any, group: str) -> list[ContractAction]:
    """Approve a resume request's unpauses (a different person from the requester). An approver who may
    also execute sends them at once; otherwise they wait, approved, for an operator to execute.
    TRADES_ENABLED comes back on when the last unpause of the request is confirmed (see `_finish_resume`)."""
    actions = list(ContractAction.objects.filter(group=group, kind="unpause", status=ActionStatus.PROPOSED))
    if not actions:
        raise ValidationError({"group": f"No pending resume request {group!r}."})
    approved = [approve_contract_action(actor=actor, action=action) for action in actions]
    if actor.has_perm("ops.execute_contractaction"):
        return [execute_contract_action(actor=actor, action=action) for action in approved]
    return approved


def _finish_resume(action: ContractAction) -> None:
    """After an unpause of a resume request is confirmed (by `advance_contract_actions`): when none of the
    request is left to send or confirm, trading is enabled again (the kill switch's second half). Not when it
    is sent: until it is mined and confirmed the escrow is still paused, and the unpause may revert or stall.
    A replacement of an unpause counts for its original's request."""
    root = action.replaces if action.replaces_id else action
    if action.kind != "unpause" or not root.group.startswith("resume-") or action.status != ActionStatus.CONFIRMED:
        return
    pending = ContractAction.objects.filter(Q(group=root.group) | Q(replaces__group=root.group), kind="unpause",
                                            status__in=(*AWAITING, *IN_FLIGHT))
    if not pending.exists():
        set_platform_flag(actor="system:actions", key="TRADES_ENABLED", value=True,
                          reason=f"resume {root.group}: every unpause was confirmed")
