"""RB-05 without waiting for a person: when a certain trigger holds, pause the chain through the guardian module with
the server's guardian key (or the owner key in eoa custody), page that it paused and why, and open the incident.

Only pausing is automatic: the module lets the guardian key call `pause()` and nothing else, and unpausing still
needs the Safe's threshold. A trigger is certain only when it held at confirmation depth and again at a later
block (the checks decide that); each can be switched off per chain by staff (audited).
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from eth_utils import keccak

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import calls, transactions
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.console import services as console
from ops.models import AWAITING, IN_FLIGHT, ActionStatus, AutoPauseSwitch, AutoPauseTrigger, ContractAction, Custody

from . import execute, simulations, transitions

logger = logging.getLogger(__name__)

SYSTEM = "system:auto-pause"
MODULE_PAUSE = "0x" + keccak(text="pause()")[:4].hex()  # PauseGuardianModule.pause(): the guardian pauses itself
RETRY_AFTER_FAILURE = timedelta(minutes=10)


def trigger_enabled(chain: str, trigger: str) -> bool:
    """A trigger is on unless staff switched it off for this chain."""
    switch = AutoPauseSwitch.objects.filter(chain=chain, trigger=trigger).first()
    return switch is None or switch.enabled


def set_auto_pause_trigger(*, actor: Any, chain: str, trigger: str, enabled: bool, reason: str) -> AutoPauseSwitch:
    """Switch one trigger of the automatic pause on or off for one chain (ops admins; audited)."""
    require_perm(actor, "ops.change_autopauseswitch", "switch automatic pause triggers", allow_system=False)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why this trigger is switched."})
    if trigger not in AutoPauseTrigger.values:
        raise ValidationError({"trigger": f"Unknown trigger {trigger!r}: one of {', '.join(AutoPauseTrigger.values)}."})
    get_chain_config(chain)  # an unknown chain is refused by name
    with transaction.atomic():
        switch = AutoPauseSwitch.objects.select_for_update().filter(chain=chain, trigger=trigger).first()
        before = {"enabled": switch.enabled if switch else True}
        if switch is None:
            switch = AutoPauseSwitch(chain=chain, trigger=trigger)
        switch.enabled, switch.reason, switch.updated_by = enabled, reason, actor
        switch.save()
        record_audit(actor=actor, action="set_auto_pause_trigger", obj=switch, before=before,
                     after={"chain": chain, "trigger": trigger, "enabled": enabled}, reason=reason)
    return switch


def pause_route(chain: str) -> tuple[str, str, str, str]:
    """(custody, tx_to, tx_data, safe address) of an automatic pause on `chain`; ValidationError naming what is
    missing when the chain cannot pause by itself. The pause drill sends the same on its fork."""
    cfg = get_chain_config(chain)
    if not cfg.is_safe:
        if not transactions.has_key("owner"):
            raise ValidationError({"chain": f"{chain} is in eoa custody but the server has no OWNER_KEY to pause "
                                            "with."})
        return Custody.OWNER_KEY, cfg.escrow.lower(), calls.encode("pause", {}), ""
    if not cfg.guardian_module:
        raise ValidationError({"chain": f"{chain} has no guardian module ({cfg.key.upper()[:3]}_GUARDIAN_MODULE): "
                                        "nothing can pause it without the Safe's threshold."})
    if not transactions.has_key("guardian"):
        raise ValidationError({"chain": "No GUARDIAN_KEY (or GUARDIAN_KEYSTORE): set the key of a guardian of "
                                        f"{cfg.guardian_module} for the automatic pause."})
    safe = simulations.safe_of(cfg).address
    return Custody.GUARDIAN_KEY, cfg.guardian_module.lower(), MODULE_PAUSE, safe


def auto_pause(*, chain: str, trigger: str, evidence: dict[str, Any]) -> ContractAction | None:
    """Pause `chain` now because `trigger` holds (its `evidence`: the blocks and values the check read).

    Nothing when the chain's automatic pause is off (<PREFIX>_AUTO_PAUSE), the trigger is switched off, the escrow
    is already paused, or an automatic pause is already on its way (the database allows one per chain). Otherwise:
    an automatic contract action (actor system:auto-pause, the trigger and evidence in its audit row), signed and
    sent at once; a P0 saying it paused and why; an incident with that timeline. A pause that cannot be made
    (no key, a simulation that reverts) pages a P0 saying so: the people must pause by hand.
    """
    cfg = get_chain_config(chain)
    if not cfg.auto_pause or not trigger_enabled(chain, trigger):
        return None
    open_pause = ContractAction.objects.filter(chain=chain, kind="pause", is_automatic=True,
                                               status__in=[*AWAITING, *IN_FLIGHT]).first()
    if open_pause is not None:
        return open_pause
    # One that failed on chain paged P0 (auto-pause-failed): not sent again at every sync, each paying gas.
    if ContractAction.objects.filter(chain=chain, kind="pause", is_automatic=True, status=ActionStatus.FAILED,
                                     signed_at__gte=timezone.now() - RETRY_AFTER_FAILURE).exists():
        return None
    try:
        if transactions.escrow_paused(chain, cfg.escrow):
            return None
        custody, tx_to, tx_data, safe = pause_route(chain)
    except (ProviderUnavailable, RpcError, ValidationError) as exc:
        return _could_not_pause(chain, trigger, evidence, exc)
    data = calls.encode("pause", {})
    reason = f"automatic pause: {AutoPauseTrigger(trigger).label.lower()} ({trigger})"
    try:
        with transaction.atomic():
            action = ContractAction.objects.create(
                chain=chain, kind="pause", params={}, description=calls.describe("pause", {}),
                to_address=cfg.escrow.lower(), calldata=data, calldata_hash="0x" + keccak(hexstr=data).hex(),
                reason=reason, is_automatic=True, group=f"auto-pause-{trigger}", custody=custody,
                status=ActionStatus.APPROVED, approved_at=timezone.now(), tx_to=tx_to, tx_data=tx_data,
                safe_address=safe)
            record_audit(actor=SYSTEM, action="propose_contract_action", obj=action,
                         after={**transitions.snapshot(action), "trigger": trigger, "evidence": evidence},
                         reason=reason)
    except IntegrityError:  # another worker's automatic pause won the race: it is the one on its way
        return ContractAction.objects.filter(chain=chain, kind="pause", is_automatic=True,
                                             status__in=[*AWAITING, *IN_FLIGHT]).first()
    try:
        action = execute.execute_contract_action(actor=SYSTEM, action=action)
    except ValidationError as exc:
        transitions.mark_action(action, ActionStatus.REJECTED, only_from=(ActionStatus.APPROVED,),
                                outcome=f"automatic pause not sent: {'; '.join(exc.messages)}")
        return _could_not_pause(chain, trigger, evidence, exc)
    if action.status == ActionStatus.REJECTED:
        return _could_not_pause(chain, trigger, evidence, ValidationError(action.outcome))
    _announce(action, trigger, evidence)
    return action


def _announce(action: ContractAction, trigger: str, evidence: dict[str, Any]) -> None:
    """The P0 that says the chain was paused and why, and the incident with the timeline so far."""
    label = AutoPauseTrigger(trigger).label
    facts = "; ".join(f"{k}: {v}" for k, v in evidence.items())
    alert = raise_alert(key=f"auto-paused:{action.chain}", severity="P0", source="auto_pause",
                        title=f"{action.chain} escrow PAUSED automatically: {label.lower()}",
                        message=f"The back office paused {action.chain} by itself (RB-05) because: {label} "
                                f"({facts}). Pause #{action.pk}, transaction {action.tx_hash} "
                                f"({action.get_status_display().lower()}). Unpausing needs the Safe's threshold: "
                                "investigate first (runbook RB-05), then Resume trading.")
    now = timezone.now()
    key = "the guardian key" if action.custody == Custody.GUARDIAN_KEY else "the owner key"
    console.open_system_incident(
        source=SYSTEM, title=f"{action.chain}: automatic pause — {label.lower()}", severity="P0", runbook="RB-05",
        summary=f"Paused by the back office because: {label} ({facts}).",
        events=[(now, f"First seen: {label} at block {evidence.get('first_block')}"),
                (now, f"Confirmed at block {evidence.get('block')}: {facts}"),
                (action.signed_at or now, f"Pause #{action.pk} sent by {key}: transaction {action.tx_hash}")],
        alerts=[alert], actions=[action])


def _could_not_pause(chain: str, trigger: str, evidence: dict[str, Any], exc: Exception) -> None:
    why = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
    logger.error("automatic pause of %s failed: %s", chain, why, extra={"chain": chain})
    raise_alert(key=f"auto-pause-failed:{chain}", severity="P0", source="auto_pause",
                title=f"{chain}: the automatic pause could NOT pause the escrow — pause it by hand now",
                message=f"{AutoPauseTrigger(trigger).label} ({'; '.join(f'{k}: {v}' for k, v in evidence.items())}). "
                        f"The pause failed: {why}. RB-05: Emergency stop from the back office.")
    return None
