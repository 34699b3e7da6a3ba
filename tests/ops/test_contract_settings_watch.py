"""The owner settings watch on a real anvil: the status page reads the fees, timeouts and stray native coin; a
setting changed with no contract action of the back office is a P1, one the back office made is not."""
from __future__ import annotations

import pytest
from django.urls import reverse
from web3 import Web3

from backoffice.alerts.models import Alert
from chain.models import ChainState
from chain.sync import sync_chain
from ops.monitoring.checks import contracts as contract_checks

from .test_contract_actions import run_to_confirmed

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

KEY = "contract-settings-changed:bsc"


def open_alert() -> Alert | None:
    return Alert.objects.filter(key=KEY, acknowledged_at__isnull=True).first()


def seen_twice(chain) -> list[str]:
    """A change pages only when it holds at a later block too: the check, a block, the check again."""
    first = contract_checks.check_contracts()
    assert KEY not in first, "seen once: an observation, not a page"
    chain.rpc("evm_mine", [])
    return contract_checks.check_contracts()


def test_settings_changed_outside_the_back_office_raise_a_p1_naming_each(chain):
    assert (contract_checks.check_contracts() == []
            and ChainState.objects.get(chain="bsc").contract_settings["platform_fee_bps"] == 100)
    chain.send(chain.escrow.functions.setPlatformFeeBps(250), chain.owner)  # the owner's own tools, not ours
    newcomer = Web3.to_checksum_address("0x" + "77" * 20)
    chain.send(chain.escrow.functions.setSupportedToken(newcomer, True), chain.owner)
    chain.send(chain.escrow.functions.setSupportedToken(chain.tokens["USDC"].address, False), chain.owner)
    sync_chain("bsc")  # a token no order used yet is known from its SupportedTokenSet event
    assert "contract-settings-observed:bsc" in contract_checks.check_contracts() and open_alert() is None
    assert Alert.objects.get(key="contract-settings-observed:bsc").severity == "P3"
    chain.rpc("evm_mine", [])
    assert KEY in contract_checks.check_contracts()
    assert Alert.objects.get(key="contract-settings-observed:bsc").resolved_at is not None, "the page took over"
    alert = open_alert()
    assert alert.severity == "P1"
    assert "platform_fee_bps: 100 → 250" in alert.message and f"token {newcomer.lower()} now supported" in alert.message
    assert f"token {chain.tokens['USDC'].address.lower()} no longer supported" in alert.message
    alert.acknowledged_at = alert.created_at
    alert.save(update_fields=["acknowledged_at"])
    assert KEY not in contract_checks.check_contracts(), "recorded: no change since"


def test_settings_the_back_office_changed_raise_nothing(chain, alice, bob):
    contract_checks.check_contracts()
    run_to_confirmed(alice, bob, "set_platform_fee", {"bps": 250})
    run_to_confirmed(alice, bob, "set_timeouts", {"seller_timeout": 3600, "buyer_timeout": 7200,
                                                   "dispute_timeout": 86400})
    assert KEY not in contract_checks.check_contracts() and open_alert() is None
    assert ChainState.objects.get(chain="bsc").contract_settings["timeouts"] == [3600, 7200, 86400]


def test_a_back_office_action_signed_but_not_yet_recorded_as_sent_raises_nothing(chain, alice, bob):
    from ops.models import ContractAction

    contract_checks.check_contracts()
    action = run_to_confirmed(alice, bob, "set_platform_fee", {"bps": 250})
    # Its broadcast raised after the node took it (or an owner sent the signed SafeTx himself): mined, still "signed".
    ContractAction.objects.filter(pk=action.pk).update(status="signed", sent_at=None, receipt_block=None,
                                                       confirmed_at=None)
    assert KEY not in seen_twice(chain) and open_alert() is None


def test_a_back_office_action_does_not_explain_a_different_value(chain, alice, bob):
    contract_checks.check_contracts()
    run_to_confirmed(alice, bob, "set_platform_fee", {"bps": 250})
    chain.send(chain.escrow.functions.setPlatformFeeBps(900), chain.owner)
    assert KEY in seen_twice(chain) and "platform_fee_bps: 100 → 900" in open_alert().message


def test_status_page_shows_fees_timeouts_native_coin_and_a_plain_treasury(chain, alice, client):
    client.force_login(alice)
    chain.rpc("anvil_setBalance", [chain.escrow.address, hex(3 * 10**17)])
    html = client.get(reverse("admin:ops_contractaction_status", args=["bsc"])).content.decode()
    assert "<td>100 (1%)</td>" in html and "5000 (50% of the platform fee)" in html
    assert "seller 1 d (86400 s), buyer 3 d (259200 s), dispute 3 d (259200 s)" in html
    assert "0.3 — <strong>the escrow never needs it" in html
    assert "a plain account: the runbook (§8) wants a multisig" in html  # the demo treasury is anvil account 1


def test_a_token_the_back_office_learns_of_later_is_no_change(chain):
    """Supported before the first check, but known only once the sync reads its event: nothing changed on chain."""
    earlier = Web3.to_checksum_address("0x" + "78" * 20)
    chain.send(chain.escrow.functions.setSupportedToken(earlier, True), chain.owner)
    contract_checks.check_contracts()  # before the sync: the token is not known yet
    sync_chain("bsc")
    assert KEY not in contract_checks.check_contracts() and open_alert() is None
    assert ChainState.objects.get(chain="bsc").contract_settings["tokens"][earlier.lower()] is True


def test_a_redeployed_escrow_starts_a_new_record_instead_of_a_p1(chain):
    contract_checks.check_contracts()
    state = ChainState.objects.get(chain="bsc")
    ChainState.objects.filter(pk=state.pk).update(contract_settings={
        **state.contract_settings, "escrow": "0x" + "99" * 20, "platform_fee_bps": 700})
    assert KEY not in contract_checks.check_contracts()
    assert ChainState.objects.get(chain="bsc").contract_settings["escrow"] == chain.escrow.address.lower()


def test_an_older_read_never_replaces_a_newer_record(chain):
    contract_checks.check_contracts()
    state = ChainState.objects.get(chain="bsc")
    ahead = {**state.contract_settings, "block": state.contract_settings["block"] + 1000, "platform_fee_bps": 700}
    ChainState.objects.filter(pk=state.pk).update(contract_settings=ahead)
    assert KEY not in contract_checks.check_contracts(), "a lagging provider's read: no comparison, no alert"
    assert ChainState.objects.get(chain="bsc").contract_settings == ahead
