"""The effect verified after execution: what a confirmed action did on the chain, against what its last simulation
(on a fork, just before sending) said it would do."""
from __future__ import annotations

import logging

from django.db import transaction

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from chain import effects
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import ActionStatus, ContractAction, EffectCheck

from . import transitions

logger = logging.getLogger(__name__)
SYSTEM = "system:effect-check"


def verify_contract_action_effect(*, action: ContractAction) -> ContractAction:
    """Compare a confirmed action's receipt events and the watched getters and balances (read at its block and
    the one before) with the simulation recorded before sending (else the proposal's). Marks it "effect as
    simulated" or "effect differs" (audited); a difference raises a P1 with both versions, after the commit.
    Without a fork simulation, or when the chain cannot be read, it is marked not verified, saying why."""
    if action.status != ActionStatus.CONFIRMED or action.effect_check:
        return action
    expected = action.execution_effects or action.proposal_effects
    observed, differ, why = None, [], ""
    if not expected or expected.get("method") != "fork" or not expected.get("ok"):
        check, why = EffectCheck.UNVERIFIED, "no state changes were simulated on a fork for it"
    else:
        names = {action.safe_address: "Safe"} if action.safe_address else {}
        try:
            observed = effects.observed_for_tx(action.chain, action.tx_hash, order_id=action.order_onchain_id,
                                               token=action.params.get("token"), extra_names=names)
        except (effects.EffectsUnavailable, ProviderUnavailable, RpcError) as exc:
            check, why = EffectCheck.UNVERIFIED, f"the chain could not be read: {exc}"
        else:
            differ = effects.differences(expected, observed)
            check = EffectCheck.DIFFERS if differ else EffectCheck.AS_SIMULATED
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        before = transitions.snapshot(action)
        action.effect_check, action.observed_effects = check, observed
        action.effect_check_differences = differ or ([why] if why else [])
        action.save(update_fields=["effect_check", "observed_effects", "effect_check_differences"])
        record_audit(actor=SYSTEM, action="verify_contract_action_effect", obj=action, before=before,
                     after={**transitions.snapshot(action), "effect_check": check},
                     reason="; ".join(action.effect_check_differences) or "effect as simulated")
        if check == EffectCheck.DIFFERS:
            transaction.on_commit(lambda: _alert_differs(action, expected, observed, differ))
    return action


def _side(effects_: dict) -> str:
    state = ", ".join(f"{r['name']} {r['before']} → {r['after']}" for r in effects_.get("state") or []) or "none"
    balances = ", ".join(f"{r['name']} {r['delta']}" for r in effects_.get("balances") or []) or "none"
    events = ", ".join(f"{e['contract']}.{e['event']}" for e in effects_.get("events") or []) or "none"
    return f"values: {state}; balances: {balances}; events: {events}"


def _alert_differs(action: ContractAction, expected: dict, observed: dict, differ: list[str]) -> None:
    raise_alert(key=f"effect-differs:{action.chain}:{action.pk}", severity="P1", source="contract_actions",
                title=f"{action.chain}: contract action #{action.pk} did not do what was simulated",
                message=f"#{action.pk} {action.description} (tx {action.tx_hash}): " + "; ".join(differ)
                + f"\nSimulated: {_side(expected)}\nOn chain: {_side(observed)}\nFind out what else ran in that "
                "block or changed the contracts; the signers approved the simulated effect.")
