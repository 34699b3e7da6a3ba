"""State changes before signing: each runbook owner call simulated on an anvil fork of the chain (the Safe's path as
it will run), recorded at proposal and again before sending, and equal to what its execution does on the chain
(read back here with web3, not through the code under test)."""
from __future__ import annotations

import time

import pytest

from ops.actions import services as actions
from ops.models import IN_FLIGHT, ContractAction

from .custody_fixtures import *  # noqa: F403 - fixtures
from .custody_fixtures import sign_typed

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

NEW_TREASURY = "0x00000000000000000000000000000000000000bb"


def propose(actor, kind, params, reason="runbook §8 owner call") -> ContractAction:
    return actions.propose_contract_action(actor=actor, chain="bsc", kind=kind, params=params, reason=reason)


def sign(node, action: ContractAction, user) -> ContractAction:
    return actions.add_action_signature(actor=user, action=action,
                                        signature=sign_typed(node, user.account, action.typed_data))


def confirm(action: ContractAction, timeout: float = 10) -> ContractAction:
    deadline = time.monotonic() + timeout
    while True:
        actions.advance_contract_actions(chain="bsc")
        action.refresh_from_db()
        if action.status not in IN_FLIGHT or time.monotonic() > deadline:
            return action
        time.sleep(0.1)


def changed(effects: dict) -> dict:
    return {row["name"]: (row["before"], row["after"]) for row in effects["state"]}


def test_treasury_change_proposal_records_its_state_changes_from_a_fork(safe_chain, staff):
    old = safe_chain.escrow.functions.treasury().call().lower()
    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    effects = action.proposal_effects
    assert effects["method"] == "fork" and effects["ok"], effects
    assert changed(effects) == {"escrow.treasury": (old, NEW_TREASURY)}
    assert [(e["contract"], e["event"]) for e in effects["events"]] == [("escrow", "TreasuryUpdated"),
                                                                        ("Safe", "ExecutionSuccess")]
    assert effects["events"][0]["args"] == {"oldTreasury": old, "newTreasury": NEW_TREASURY}
    # Nothing happened on the chain itself.
    assert safe_chain.escrow.functions.treasury().call().lower() == old
