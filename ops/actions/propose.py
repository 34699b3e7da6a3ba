"""Proposing, approving and rejecting an owner action, and the Safe's own cancel of a rejected SafeTx."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_utils import keccak

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import calls
from chain import safe as chain_safe
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    AWAITING,
    IN_FLIGHT,
    ActionStatus,
    ContractAction,
    Custody,
)

from . import simulations, transitions
from .selectors import exposed_safe_txs


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
        state = simulations.safe_of(cfg)
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
        sender = transitions.server_signer(transitions.ROLE[route])
    simulation = simulations.simulate_call(chain, to, data, sender)
    if not simulation.ok and not automatic:
        raise ValidationError({"params": f"The call would revert ({simulation.reason}): nothing was proposed."})
    if "order_id" in cleaned:
        order_onchain_id = cleaned["order_id"]
    # What the call changes, on a fork at the head (seconds): rule-bound automation (the keeper, the automatic
    # pause) must not wait for it, and a reverting call changes nothing.
    effects = None if automatic or not simulation.ok else simulations.proposal_effects(
        chain=chain, custody=route, to=to, data=data, safe=fixed.get("safe_address", ""),
        order_id=order_onchain_id, token=cleaned.get("token"))
    if effects and effects["method"] == "fork" and not effects["ok"]:
        raise ValidationError({"params": f"The call reverts when made as it will run ({effects['reason']}): nothing "
                                         "was proposed."})
    with transaction.atomic():
        if route == Custody.SAFE:
            refuse_open_safe_tx(fixed["signing_hash"])
        try:
            with transaction.atomic():
                action = ContractAction.objects.create(
                    chain=chain, kind=kind, params=cleaned, description=calls.describe(kind, cleaned)[:300],
                    to_address=to, calldata=data, calldata_hash="0x" + keccak(hexstr=data).hex(), reason=reason,
                    is_automatic=automatic, order_onchain_id=order_onchain_id, group=group,
                    proposed_by=None if automatic else actor, proposal_simulation=simulation.as_dict(),
                    proposal_effects=effects,
                    custody=route,
                    # Rule-bound automation is approved by its rule; everything else waits for a second person.
                    status=(ActionStatus.REJECTED if not simulation.ok else
                            ActionStatus.APPROVED if automatic else ActionStatus.PROPOSED),
                    outcome="" if simulation.ok else f"simulation reverted: {simulation.reason}", **fixed)
        except IntegrityError:
            if route == Custody.SAFE:  # the same SafeTx proposed at the same moment: name the one that won
                refuse_open_safe_tx(fixed["signing_hash"])
            raise
        record_audit(actor=actor if not automatic else transitions.SYSTEM, action="propose_contract_action", obj=action,
                     after=transitions.snapshot(action), reason=reason)
    return action


def refuse_open_safe_tx(signing_hash: str) -> None:
    """One open action per SafeTx: a second would let owners' signatures gather on the same hash outside the
    review of the first (each action counts its own signatures). The database holds the rule (the constraint
    contract_actions_one_open_per_safe_tx); this check names the open action in the refusal."""
    open_action = open_safe_tx(signing_hash)
    if open_action is not None:
        raise ValidationError({"params": f"Action #{open_action.pk} ({open_action.description}, "
                                         f"{open_action.get_status_display().lower()}) is this same SafeTx (Safe "
                                         f"nonce {open_action.safe_nonce}, hash {signing_hash}): sign, execute or "
                                         f"reject #{open_action.pk} instead; nothing was proposed."})


def open_safe_tx(signing_hash: str, *, besides: int | None = None) -> ContractAction | None:
    """The open Safe action of this SafeTx (the index allows one), other than action `besides`."""
    return (ContractAction.objects.filter(custody=Custody.SAFE, signing_hash=signing_hash,
                                          status__in=[*AWAITING, *IN_FLIGHT])
            .exclude(pk=besides).order_by("pk").first())


def propose_safe_tx_cancel(*, actor: Any, action: ContractAction, reason: str) -> ContractAction:
    """Propose the Safe's own rejection of a rejected SafeTx: a SafeTx to the Safe itself, no data, on the same
    nonce. Rejecting an action in the back office does not void its owners' signatures: whoever holds enough
    of them can still execute it until that Safe nonce is used. The cancel needs the threshold like any SafeTx.

    Refused (nothing proposed) unless `action` is a closed SafeTx (`selectors.exposed_safe_txs`: rejected, or
    failed without using its nonce, and not open again under another action) whose Safe still owns the escrow
    and is at its nonce now.
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why the SafeTx must never execute."})
    if action.kind == "cancel_safe_tx":
        raise ValidationError({"kind": f"#{action.pk} is itself a cancel: it is made harmless by executing the action "
                                       f"wanted on Safe nonce {action.safe_nonce}."})
    if not exposed_safe_txs().filter(pk=action.pk).exists():
        again = open_safe_tx(action.signing_hash, besides=action.pk) if action.custody == Custody.SAFE else None
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
        before = transitions.snapshot(action)
        action.status, action.approved_by, action.approved_at = ActionStatus.APPROVED, actor, timezone.now()
        action.save(update_fields=["status", "approved_by", "approved_at"])
        record_audit(actor=actor, action="approve_contract_action", obj=action, before=before,
                     after=transitions.snapshot(action), reason=action.reason)
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
        before = transitions.snapshot(action)
        action.status, action.outcome = ActionStatus.REJECTED, f"rejected: {reason}"
        action.save(update_fields=["status", "outcome"])
        record_audit(actor=actor, action="reject_contract_action", obj=action, before=before,
                     after=transitions.snapshot(action), reason=reason)
    return action
