"""State changes before signing: each runbook owner call simulated on an anvil fork of the chain (the Safe's path as
it will run), recorded at proposal and again before sending, and equal to what its execution does on the chain
(read back here with web3, not through the code under test)."""
from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from backoffice.alerts.models import Alert
from backoffice.security import STEPUP_AT
from ops.actions import services as actions
from ops.models import IN_FLIGHT, ActionStatus, ContractAction, EffectCheck

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


ESCROW_READS = {"escrow.paused": "paused", "escrow.treasury": "treasury", "escrow.platformFeeBps": "platformFeeBps",
                "escrow.arbitratorFeeBps": "arbitratorFeeBps", "escrow.sellerTimeout": "sellerTimeout",
                "escrow.buyerTimeout": "buyerTimeout", "escrow.disputeTimeout": "disputeTimeout"}


def read_back(node, name: str):
    """The getter named in a simulated change, read with web3 straight from the chain."""
    if name in ESCROW_READS:
        value = getattr(node.escrow.functions, ESCROW_READS[name])().call()
        return value.lower() if isinstance(value, str) else value
    if name.startswith("supported "):
        return node.escrow.functions.supportedTokens(node.tokens[name.split()[1]].address).call()
    if name.startswith("order "):
        return node.order(int(name.split()[1]))["status"]
    raise AssertionError(f"no reader for {name}")


def execute_through_the_safe(node, staff, action) -> ContractAction:
    sign(node, action, staff["alice"])
    action = sign(node, ContractAction.objects.get(pk=action.pk), staff["bob"])
    action = actions.execute_contract_action(actor=staff["carol"], action=action)
    return confirm(action)


def treasury_change_sent_not_mined(node, staff) -> ContractAction:
    """A treasury change signed by two owners and sent, automine off: the test puts what it wants beside it in its
    block, then mines."""
    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    sign(node, action, staff["alice"])
    action = sign(node, ContractAction.objects.get(pk=action.pk), staff["bob"])
    node.automine(False)
    return actions.execute_contract_action(actor=staff["carol"], action=action)


def disputed_order_past_deadline(node) -> int:
    order_id = node.create_order(amount=500 * 10**18)
    node.deliver(order_id)
    node.dispute(order_id)
    node.increase_time(node.escrow.functions.disputeTimeout().call() + 60)
    node.mine()
    return order_id


def paused(node) -> dict:
    node.as_safe(node.escrow.functions.pause())
    return {}


def funded_order_past_seller_deadline(node) -> int:
    order_id = node.create_order(amount=300 * 10**18)
    node.increase_time(node.escrow.functions.sellerTimeout().call() + 60)
    return order_id


def delivered_order_past_buyer_deadline(node) -> int:
    order_id = node.create_order(amount=400 * 10**18)
    node.deliver(order_id)
    node.increase_time(node.escrow.functions.buyerTimeout().call() + 60)
    return order_id


CALLS = [
    ("set_treasury", lambda node: {"treasury": NEW_TREASURY}),
    ("set_platform_fee", lambda node: {"bps": 150}),
    ("set_arbitrator_fee", lambda node: {"bps": 4000}),
    ("set_timeouts", lambda node: {"seller_timeout": 7200, "buyer_timeout": 86400, "dispute_timeout": 172800}),
    ("set_supported_token", lambda node: {"token": node.tokens["USDT"].address, "supported": "false"}),
    ("pause", lambda node: {}),
    ("unpause", paused),
    ("auto_expire", lambda node: {"order_id": funded_order_past_seller_deadline(node)}),
    ("auto_release", lambda node: {"order_id": delivered_order_past_buyer_deadline(node)}),
    ("owner_resolve", lambda node: {"order_id": disputed_order_past_deadline(node), "favor_buyer": "false"}),
]


@pytest.mark.parametrize(("kind", "params"), CALLS, ids=[k for k, _ in CALLS])
def test_each_runbook_owner_call_changes_on_execution_what_its_fork_simulation_said(safe_chain, staff, kind, params):
    node = safe_chain
    args = params(node)
    order_id = args.get("order_id")
    holders = {"escrow": node.escrow.address, "treasury": node.escrow.functions.treasury().call()}
    if order_id:
        order = node.order(order_id)
        holders.update(buyer=order["buyer"], seller=order["seller"])
    before = {f"USDT of {label}": node.balance("USDT", address) for label, address in holders.items()}
    action = propose(staff["alice"], kind, args)
    simulated = action.proposal_effects
    assert simulated["method"] == "fork" and simulated["ok"], simulated
    assert simulated["state"], "an owner call that changes nothing watched"
    done = execute_through_the_safe(node, staff, action)
    assert done.status == ActionStatus.CONFIRMED, done.outcome
    for row in simulated["state"]:
        assert read_back(node, row["name"]) == row["after"], row
    simulated_deltas = {row["name"]: int(row["delta"]) for row in simulated["balances"]}
    for name, old in before.items():
        label = name.split(" of ", 1)[1]
        assert node.balance("USDT", holders[label]) - old == simulated_deltas.get(name, 0), name
    if kind == "owner_resolve":
        assert simulated_deltas["USDT of seller"] > 0 and simulated_deltas["USDT of escrow"] == -500 * 10**18
    if kind == "auto_expire":
        assert simulated_deltas["USDT of buyer"] == 300 * 10**18 == -simulated_deltas["USDT of escrow"]
    if kind == "auto_release":
        assert simulated_deltas["USDT of seller"] > 0 and simulated_deltas["USDT of escrow"] == -400 * 10**18
    receipt = node.w3.eth.get_transaction_receipt(done.tx_hash)
    topics = [log["topics"][0].hex().removeprefix("0x") for log in receipt["logs"]]
    assert len(topics) == len(simulated["events"])
    # The same recording before sending, on the very execTransaction sent: no difference to acknowledge.
    assert done.execution_effects["method"] == "fork" and done.effects_differences == []


def test_a_chain_that_moved_since_proposal_shows_the_difference_and_needs_the_executors_acknowledgement(
        safe_chain, staff, client):
    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    sign(safe_chain, action, staff["alice"])
    action = sign(safe_chain, ContractAction.objects.get(pk=action.pk), staff["bob"])
    # Something else moves the treasury meanwhile (as a module could): the same call now changes another value.
    safe_chain.as_safe(safe_chain.escrow.functions.setTreasury("0x00000000000000000000000000000000000000cc"))
    client.force_login(staff["carol"])
    session = client.session
    session[STEPUP_AT] = time.time()  # the execute page asks for a fresh step-up
    session.save()
    page = client.get(reverse("admin:ops_contractaction_execute", args=[action.pk])).content.decode()
    assert "The chain moved" in page and "0x00000000000000000000000000000000000000cc" in page
    with pytest.raises(ValidationError) as refused:
        actions.execute_contract_action(actor=staff["carol"], action=action)
    assert "acknowledge_effects" in refused.value.message_dict
    assert "0x00000000000000000000000000000000000000cc" in refused.value.message_dict["acknowledge_effects"][0]
    assert ContractAction.objects.get(pk=action.pk).status == ActionStatus.APPROVED  # nothing signed
    done = actions.execute_contract_action(actor=staff["carol"], action=action, acknowledge_effects=True)
    assert done.status in IN_FLIGHT and done.effects_acknowledged_by == staff["carol"]
    assert any("escrow.treasury" in line for line in done.effects_differences)


def test_a_fork_that_cannot_start_falls_back_to_eth_call_and_the_page_says_so(safe_chain, staff, settings, client):
    settings.ANVIL_BIN = "/nonexistent/anvil"
    from chain import fork

    original = fork.shutil.which
    fork.shutil.which = lambda name: None  # no anvil anywhere: the fork cannot start
    try:
        action = propose(staff["alice"], "set_platform_fee", {"bps": 150})
    finally:
        fork.shutil.which = original
    assert action.proposal_effects["method"] == "eth_call"
    assert "anvil is not installed" in action.proposal_effects["fallback"]
    client.force_login(staff["bob"])
    page = client.get(reverse("admin:ops_contractaction_change", args=[action.pk])).content.decode()
    assert "No state changes shown" in page and "anvil is not installed" in page


def test_signing_and_action_pages_show_the_state_changes(safe_chain, staff, client):
    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    client.force_login(staff["bob"])
    for url in (reverse("admin:ops_contractaction_sign", args=[action.pk]),
                reverse("admin:ops_contractaction_change", args=[action.pk])):
        page = client.get(url).content.decode()
        assert "escrow.treasury" in page and NEW_TREASURY in page and "TreasuryUpdated" in page


def test_a_confirmed_action_whose_effect_is_as_simulated_says_so(safe_chain, staff, client):
    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    done = execute_through_the_safe(safe_chain, staff, action)
    assert done.status == ActionStatus.CONFIRMED
    assert done.effect_check == EffectCheck.AS_SIMULATED, done.effect_check_differences
    assert done.observed_effects["state"] == done.execution_effects["state"]
    assert not Alert.objects.filter(key__startswith="effect-differs:").exists()
    client.force_login(staff["bob"])
    page = client.get(reverse("admin:ops_contractaction_change", args=[action.pk])).content.decode()
    assert "Effect as simulated" in page and "Observed on the chain after execution" in page


def test_a_trade_in_the_same_block_is_set_apart_and_the_effect_is_as_simulated(safe_chain, staff, client):
    node = safe_chain
    action = treasury_change_sent_not_mined(node, staff)
    # In the same block, a buyer funds an order: the escrow's USDT balance moves, by that trade's own transfer.
    node.escrow.functions.createOrder(node.seller, node.tokens["USDT"].address, 10**18).transact({"from": node.buyer})
    node.mine()
    node.automine(True)
    done = confirm(action)
    assert done.effect_check == EffectCheck.AS_SIMULATED, done.effect_check_differences
    [funded] = [row for row in done.observed_effects["balances"] if row["name"] == "USDT of escrow"] or [None]
    assert funded is None, "the trade's transfer is not the owner call's change"
    client.force_login(staff["carol"])
    assert "Effect as simulated" in client.get(reverse("admin:ops_contractaction_change", args=[done.pk])).content \
        .decode()


def test_an_execution_whose_effect_differs_is_marked_and_raises_a_p1_with_both_versions(
        safe_chain, staff, django_capture_on_commit_callbacks):
    node = safe_chain
    action = treasury_change_sent_not_mined(node, staff)
    # Before it is mined, the treasury moves under the call (a storage write: no contract action of ours, no event):
    # the call now changes another value than the one simulated and signed.
    old = node.escrow.functions.treasury().call()
    [slot] = [n for n in range(16) if int(node.rpc("eth_getStorageAt", [node.escrow.address, hex(n), "latest"]), 16)
              == int(old, 16)]
    node.rpc("anvil_setStorageAt", [node.escrow.address, hex(slot), "0x" + "00" * 12 + "cc" * 20])
    node.mine()
    node.automine(True)
    with django_capture_on_commit_callbacks(execute=True):
        done = confirm(action)
    assert done.status == ActionStatus.CONFIRMED
    assert done.effect_check == EffectCheck.DIFFERS
    assert any("escrow.treasury" in line and "cc" * 20 in line for line in done.effect_check_differences)
    assert any(line.startswith("event missing: escrow TreasuryUpdated") for line in done.effect_check_differences)
    alert = Alert.objects.get(key=f"effect-differs:bsc:{done.pk}")
    assert alert.severity == "P1"
    assert "Simulated:" in alert.message and "On chain:" in alert.message and "escrow.treasury" in alert.message


def test_adding_a_token_no_order_used_yet_shows_its_supported_getter_change(safe_chain, staff):
    new_token = "0x00000000000000000000000000000000000000ee"
    action = propose(staff["alice"], "set_supported_token", {"token": new_token, "supported": "true"})
    assert changed(action.proposal_effects) == {f"supported {new_token}": (False, True)}
    from chain.models import Token

    # Meanwhile the sync meets the token in an order (as it records every token at its first order): the getter keeps
    # its label, so nothing reads as changed → unchanged at sending or after.
    Token.objects.create(chain="bsc", address=new_token, symbol="NEW", decimals=6)
    done = execute_through_the_safe(safe_chain, staff, action)
    assert safe_chain.escrow.functions.supportedTokens(safe_chain.w3.to_checksum_address(new_token)).call() is True
    assert done.effects_differences == [] and done.effect_check == EffectCheck.AS_SIMULATED, \
        done.effect_check_differences


def test_a_guardian_pause_signed_by_any_guardian_is_sent_and_its_effect_is_as_simulated(safe_chain, staff):
    pause = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05 drill")
    assert pause.proposal_effects["method"] == "fork" and pause.proposal_effects["ok"], pause.proposal_effects
    assert changed(pause.proposal_effects) == {"escrow.paused": (False, True)}
    bob = staff["bob"]  # a guardian, but not the module's first: the one the proposal's fork paused as
    done = actions.add_action_signature(actor=bob, action=pause,
                                        signature=sign_typed(safe_chain, bob.account, pause.typed_data))
    assert done.status in IN_FLIGHT, done.outcome
    assert safe_chain.escrow.functions.paused().call() is True
    # The pause is not held for an acknowledgement: the other guardian is recorded as the difference it is.
    assert any("GuardianPaused" in line for line in done.effects_differences)
    assert done.effects_acknowledged_by is None
    done = confirm(done)
    assert changed(done.execution_effects) == {"escrow.paused": (False, True)}
    assert done.effect_check == EffectCheck.AS_SIMULATED, done.effect_check_differences


def test_eoa_custody_owner_call_is_simulated_on_a_fork_and_its_effect_verified(chain, alice, bob):
    old = chain.escrow.functions.treasury().call().lower()
    action = propose(alice, "set_treasury", {"treasury": NEW_TREASURY})
    assert action.custody == "owner_key"
    assert action.proposal_effects["method"] == "fork" and action.proposal_effects["ok"], action.proposal_effects
    assert changed(action.proposal_effects) == {"escrow.treasury": (old, NEW_TREASURY)}
    actions.approve_contract_action(actor=bob, action=action)
    done = confirm(actions.execute_contract_action(actor=bob, action=action))
    assert done.status == ActionStatus.CONFIRMED, done.outcome
    assert chain.escrow.functions.treasury().call().lower() == NEW_TREASURY
    assert done.execution_effects["method"] == "fork" and done.effects_differences == []
    assert done.effect_check == EffectCheck.AS_SIMULATED, done.effect_check_differences


def test_a_replacement_of_a_stuck_action_is_checked_against_the_simulation_of_the_call_it_replaces(
        safe_chain, staff, monkeypatch):
    from chain import transactions
    from chain.rpc import ProviderUnavailable

    action = propose(staff["alice"], "set_treasury", {"treasury": NEW_TREASURY})
    sign(safe_chain, action, staff["alice"])
    action = sign(safe_chain, ContractAction.objects.get(pk=action.pk), staff["bob"])

    def dropped(*args, **kwargs):
        raise ProviderUnavailable("injected: connection dropped")

    real = transactions.broadcast
    monkeypatch.setattr(transactions, "broadcast", dropped)
    stuck = actions.execute_contract_action(actor=staff["carol"], action=action)
    monkeypatch.setattr(transactions, "broadcast", real)
    assert stuck.status == ActionStatus.SIGNED
    replacement = actions.replace_contract_action(actor=staff["bob"], action=stuck, reason="stuck at a low fee")
    done = confirm(actions.execute_contract_action(actor=staff["bob"], action=replacement))
    assert done.status == ActionStatus.CONFIRMED, done.outcome
    assert done.effect_check == EffectCheck.AS_SIMULATED, done.effect_check_differences
