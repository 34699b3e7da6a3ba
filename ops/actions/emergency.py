"""RB-05 and the swap kill switch: pausing at once (guardian module or owner key), the emergency stop, and the two-
person resume.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from eth_utils import keccak

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import calls, transactions
from chain import safe as chain_safe
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.console import services as console
from ops.models import (
    AWAITING,
    IN_FLIGHT,
    ActionStatus,
    ContractAction,
    Custody,
)

from . import execute, grace, propose, simulations, transitions

logger = logging.getLogger(__name__)


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
    state = simulations.safe_of(cfg)
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
    simulation = simulations.simulate_call(chain, cfg.escrow.lower(), data, state.address)
    if not simulation.ok:
        raise ValidationError({"params": f"The pause would revert ({simulation.reason}): nothing was proposed."})
    effects = simulations.proposal_effects(chain=chain, custody=Custody.GUARDIAN, to=cfg.escrow.lower(), data=data,
                                           safe=state.address)
    with transaction.atomic():
        action = ContractAction.objects.create(
            chain=chain, kind="pause", params={}, description=calls.describe("pause", {}),
            to_address=cfg.escrow.lower(), calldata=data, calldata_hash="0x" + keccak(hexstr=data).hex(),
            reason=reason, group=group,
            proposed_by=actor, proposal_simulation=simulation.as_dict(), proposal_effects=effects,
            custody=Custody.GUARDIAN,
            tx_to=cfg.guardian_module.lower(), safe_address=state.address, safe_nonce=guardian.nonce,
            typed_data=typed, signing_hash=digest)
        record_audit(actor=actor, action="propose_contract_action", obj=action, after=transitions.snapshot(action),
                     reason=reason)
    return action


def pause_now(*, actor: Any, chain: str, reason: str, group: str = "") -> ContractAction:
    """RB-05: one operator pauses at once. eoa custody: proposed, self-approved (allowed for pause only),
    executed with the owner key. Safe custody: a guardian pause, waiting for that operator's signature."""
    require_perm(actor, "ops.execute_contractaction", "pause the escrow")
    if get_chain_config(chain).is_safe:
        return propose_guardian_pause(actor=actor, chain=chain, reason=reason, group=group)
    action = propose.propose_contract_action(actor=actor, chain=chain, kind="pause", params={}, reason=reason,
                                             group=group)
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        action.status, action.approved_by, action.approved_at = ActionStatus.APPROVED, actor, timezone.now()
        action.save(update_fields=["status", "approved_by", "approved_at"])
        record_audit(actor=actor, action="approve_contract_action", obj=action, after=transitions.snapshot(action),
                     reason="RB-05: an emergency pause needs no second approver")
    return execute.execute_contract_action(actor=actor, action=action)


def emergency_stop(*, actor: Any, reason: str, chains: list[str]) -> list[ContractAction]:
    """Swap runbook kill switch + RB-05: TRADES_ENABLED off and a pause on every chain, at once.

    A chain already paused is skipped (its simulation reverts); the flag is set regardless.
    """
    require_perm(actor, "ops.execute_contractaction", "trigger the emergency stop")
    group = f"stop-{uuid.uuid4().hex[:12]}"
    console.set_platform_flag(actor=actor, key="TRADES_ENABLED", value=False, reason=f"emergency stop: {reason}")
    actions = []
    for chain in chains:
        try:
            actions.append(pause_now(actor=actor, chain=chain, reason=f"emergency stop: {reason}", group=group))
        except ValidationError as exc:
            logger.warning("emergency stop: %s not paused: %s", chain, "; ".join(exc.messages), extra={"chain": chain})
    return actions


def request_resume(*, actor: Any, reason: str, chains: list[str],
                   grace_seconds: int | None = None) -> list[ContractAction]:
    """Propose unpause on every paused chain; `approve_resume` by someone else executes them.

    With each unpause, a grace (`grace.request_timeout_grace`, audited): the orders whose deadlines passed during
    the pause are left alone by the timeout keeper until `grace_seconds` (default RESUME_GRACE_SECONDS) after the
    unpause. A grace that cannot be recorded (when the pause began is unknown) leaves the unpause proposed, and
    is logged: the resume page shows each chain's grace, or none."""
    grace_seconds = settings.RESUME_GRACE_SECONDS if grace_seconds is None else grace_seconds
    if not 0 <= grace_seconds <= grace.MAX_GRACE_SECONDS:
        raise ValidationError({"grace_hours": f"The grace must be between 0 and {grace.MAX_GRACE_SECONDS // 3600} "
                                              "hours."})
    group = f"resume-{uuid.uuid4().hex[:12]}"
    proposed, skipped = [], []
    for chain in chains:
        try:
            proposed.append(propose.propose_contract_action(actor=actor, chain=chain, kind="unpause", params={},
                                                    reason=f"resume: {reason}", group=group))
        except ValidationError as exc:
            logger.info("resume: %s skipped: %s", chain, "; ".join(exc.messages), extra={"chain": chain})
            skipped.append(f"{chain}: {'; '.join(exc.messages)}")
            continue
        try:
            with transaction.atomic():
                grace.request_timeout_grace(actor=actor, chain=chain, group=group, grace_seconds=grace_seconds)
        except ValidationError as exc:
            logger.warning("resume %s: no grace on %s: %s", group, chain, "; ".join(exc.messages),
                           extra={"chain": chain})
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
    approved = [propose.approve_contract_action(actor=actor, action=action) for action in actions]
    if actor.has_perm("ops.execute_contractaction"):
        return [execute.execute_contract_action(actor=actor, action=action) for action in approved]
    return approved


def finish_resume(action: ContractAction) -> None:
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
        console.set_platform_flag(actor="system:actions", key="TRADES_ENABLED", value=True,
                          reason=f"resume {root.group}: every unpause was confirmed")
