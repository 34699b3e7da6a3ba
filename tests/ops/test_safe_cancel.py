"""A rejected SafeTx is void only in the back office: on a real anvil its owners' signatures still execute it,
until a cancel (a SafeTx to the Safe itself, no data, same nonce) uses its nonce up."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from web3 import Web3

from backoffice.alerts.models import Alert
from chain import safe as chain_safe
from ops.actions import services as actions
from ops.models import ActionStatus, ContractAction
from ops.monitoring.checks import custody as custody_checks

from .custody_fixtures import *  # noqa: F403 - fixtures
from .test_safe import NEW_TREASURY, confirm, propose_treasury, sign

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


def signed_then_rejected(node, staff) -> ContractAction:
    """Alice and Bob sign the new treasury (threshold met), then Carol rejects it: the signatures stay held."""
    action = sign(node, sign(node, propose_treasury(staff["alice"]), staff["alice"]), staff["bob"])
    assert action.status == ActionStatus.APPROVED
    return actions.reject_contract_action(actor=staff["carol"], action=action, reason="wrong treasury address")


def exec_call(action: ContractAction) -> dict:
    """The execTransaction anyone holding the stored signatures could send (here from an unrelated account)."""
    sigs = {s.signer_address: bytes.fromhex(s.signature.removeprefix("0x")) for s in action.signatures.all()}
    data = chain_safe.exec_transaction_calldata(to=action.to_address, data=action.calldata,
                                                signatures=chain_safe.pack_signatures(sigs))
    return {"to": Web3.to_checksum_address(action.safe_address), "data": data}


def test_cancel_on_chain_makes_a_rejected_safetx_with_its_signatures_unexecutable(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    rejected = signed_then_rejected(safe_chain, staff)
    stranger = safe_chain.accounts[19]
    safe_chain.w3.eth.call({**exec_call(rejected), "from": stranger})  # the risk: it would execute now

    cancel = actions.propose_safe_tx_cancel(actor=alice, action=rejected, reason="treasury change abandoned")
    assert cancel.kind == "cancel_safe_tx" and cancel.safe_nonce == rejected.safe_nonce
    assert cancel.to_address == rejected.safe_address and cancel.calldata == "0x"
    assert f"cancels #{rejected.pk}" in cancel.reason and cancel.status == ActionStatus.PROPOSED
    cancel = sign(safe_chain, sign(safe_chain, cancel, alice), bob)
    assert confirm(actions.execute_contract_action(actor=alice, action=cancel)).status == ActionStatus.CONFIRMED

    assert safe_chain.safe_nonce() == rejected.safe_nonce + 1
    with pytest.raises(Exception, match="GS026|revert"):  # its signatures are over a nonce that is gone
        safe_chain.w3.eth.call({**exec_call(rejected), "from": stranger})
    assert safe_chain.escrow.functions.treasury().call().lower() != NEW_TREASURY


@pytest.mark.parametrize("state", ["proposed", "used"])
def test_cancel_on_chain_is_refused_unless_rejected_with_its_nonce_unused(safe_chain, staff, state):
    alice = staff["alice"]
    if state == "proposed":
        action = propose_treasury(alice)
        match = "only a rejected or failed SafeTx"
    else:
        action = signed_then_rejected(safe_chain, staff)
        safe_chain.exec_as_owners(safe_chain.escrow.functions.setPlatformFeeBps(100))  # nonce used elsewhere
        match = f"Safe nonce {action.safe_nonce} was used"
    before = ContractAction.objects.count()
    with pytest.raises(ValidationError, match=match):
        actions.propose_safe_tx_cancel(actor=alice, action=action, reason="drill")
    assert ContractAction.objects.count() == before, "nothing was proposed"


def test_rejected_safetx_holding_the_threshold_raises_a_p2_once(safe_chain, staff):
    alice = staff["alice"]
    one_signature = actions.reject_contract_action(
        actor=staff["carol"], action=sign(safe_chain, propose_treasury(alice, "0x" + "cc" * 20), alice),
        reason="typo")
    assert not any(k.startswith("safe-tx-executable") for k in custody_checks.check_custody()), (
        "one of two: not executable")
    rejected = signed_then_rejected(safe_chain, staff)
    key = f"safe-tx-executable:bsc:{rejected.signing_hash}"
    assert key in custody_checks.check_custody()
    assert f"safe-tx-executable:bsc:{one_signature.signing_hash}" not in custody_checks.check_custody()
    alert = Alert.objects.get(key=key, acknowledged_at__isnull=True)
    assert alert.severity == "P2" and "Cancel on chain" in alert.message
    Alert.objects.filter(key=key).update(acknowledged_at=alert.created_at)
    assert key not in custody_checks.check_custody(), (
        "once per action: acknowledged, it does not page every two minutes")
    assert Alert.objects.filter(key=key).count() == 1


def test_rejected_safetx_proposed_again_is_not_offered_a_cancel(safe_chain, staff):
    """Rejected by mistake and proposed anew (the same SafeTx): the owners want it, cancelling would kill it."""
    alice = staff["alice"]
    rejected = signed_then_rejected(safe_chain, staff)
    again = propose_treasury(alice)
    assert again.signing_hash == rejected.signing_hash
    assert not any(k.startswith("safe-tx-executable") for k in custody_checks.check_custody())
    with pytest.raises(ValidationError, match=f"the same SafeTx is open again as #{again.pk}"):
        actions.propose_safe_tx_cancel(actor=alice, action=rejected, reason="drill")


def test_cancel_targets_the_rejected_actions_own_safe(safe_chain, staff):
    rejected = signed_then_rejected(safe_chain, staff)
    with pytest.raises(ValidationError, match="not the Safe 0x"):
        actions.propose_contract_action(actor=staff["alice"], chain="bsc", kind="cancel_safe_tx", params={},
                                        reason="drill", safe_nonce=rejected.safe_nonce, safe_address="0x" + "99" * 20)


def test_rejected_safetx_page_warns_and_offers_the_cancel(safe_chain, staff, client):
    alice = staff["alice"]
    rejected = signed_then_rejected(safe_chain, staff)
    client.force_login(alice)
    page = client.get(reverse("admin:ops_contractaction_change", args=[rejected.pk])).content.decode()
    cancel_url = reverse("admin:ops_contractaction_cancel", args=[rejected.pk])
    assert "Anyone holding them can execute it now." in page and f'href="{cancel_url}"' in page
    confirm_page = client.get(cancel_url).content.decode()
    assert "does not void its owners" in confirm_page
    response = client.post(cancel_url, {"reason": ""})
    assert response.status_code == 200 and "This field is required" in response.content.decode()
    response = client.post(cancel_url, {"reason": "treasury change abandoned"})
    cancel = ContractAction.objects.get(kind="cancel_safe_tx")
    assert response.status_code == 302 and response["Location"] == reverse("admin:ops_contractaction_change",
                                                                           args=[cancel.pk])
    page = client.get(reverse("admin:ops_contractaction_change", args=[rejected.pk])).content.decode()
    assert f"#{cancel.pk}</a> (proposed" in page and cancel_url not in page, "one open cancel: no second button"
    # The owners sign the cancel on the same signing page as any SafeTx, the call said in words.
    sign_page = client.get(reverse("admin:ops_contractaction_sign", args=[cancel.pk]))
    assert sign_page.status_code == 200 and "no call: uses up the Safe nonce" in sign_page.content.decode()
    typed = client.get(reverse("admin:ops_contractaction_typed_data", args=[cancel.pk])).json()
    assert typed["message"]["to"].lower() == rejected.safe_address and typed["message"]["data"] == "0x"
    assert int(typed["message"]["nonce"]) == rejected.safe_nonce
    # Once the nonce is used, the warning and the button go.
    cancel = sign(safe_chain, sign(safe_chain, cancel, alice), staff["bob"])
    confirm(actions.execute_contract_action(actor=alice, action=cancel))
    page = client.get(reverse("admin:ops_contractaction_change", args=[rejected.pk])).content.decode()
    assert "Rejected here, but not on chain" not in page and cancel_url not in page


def test_safetx_signed_half_under_each_of_two_rejected_actions_is_flagged_executable(safe_chain, staff, client):
    """Alice signs #A, it is rejected; the same SafeTx proposed again as #B, Bob signs, it is rejected: neither
    holds two signatures, but together they execute it on chain."""
    alice, bob, carol = staff["alice"], staff["bob"], staff["carol"]
    first = actions.reject_contract_action(actor=carol, action=sign(safe_chain, propose_treasury(alice), alice),
                                           reason="typo in the reason")
    second = actions.reject_contract_action(actor=carol, action=sign(safe_chain, propose_treasury(bob), bob),
                                            reason="not now")
    assert second.signing_hash == first.signing_hash and second.signatures.count() == 1
    both = exec_call(first)
    sigs = {s.signer_address: bytes.fromhex(s.signature.removeprefix("0x"))
            for s in (*first.signatures.all(), *second.signatures.all())}
    both["data"] = chain_safe.exec_transaction_calldata(to=first.to_address, data=first.calldata,
                                                        signatures=chain_safe.pack_signatures(sigs))
    safe_chain.w3.eth.call({**both, "from": safe_chain.accounts[19]})  # the risk is real
    key = f"safe-tx-executable:bsc:{first.signing_hash}"
    assert key in custody_checks.check_custody()
    assert f"#{first.pk}, #{second.pk}" in Alert.objects.get(key=key).title
    client.force_login(alice)
    page = client.get(reverse("admin:ops_contractaction_change", args=[second.pk])).content.decode()
    assert "Anyone holding them can execute it now." in page


def test_a_cancel_is_not_itself_cancelled(safe_chain, staff):
    alice = staff["alice"]
    cancel = actions.propose_safe_tx_cancel(actor=alice, action=signed_then_rejected(safe_chain, staff),
                                            reason="abandoned")
    cancel = actions.reject_contract_action(actor=staff["carol"], action=cancel, reason="changed our minds")
    with pytest.raises(ValidationError, match="itself a cancel"):
        actions.propose_safe_tx_cancel(actor=alice, action=cancel, reason="drill")

