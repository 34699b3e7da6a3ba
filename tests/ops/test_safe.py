"""Safe custody on a real anvil: 2-of-3 signatures, verification against the Safe's current owners, stale
nonces, and exactly-once execution by the relayer after a crash."""
from __future__ import annotations

import time

import pytest
from django.core.exceptions import ValidationError
from web3 import Web3

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from chain import transactions
from ops.actions import services as actions
from ops.actions import transitions
from ops.models import IN_FLIGHT, ActionSignature, ActionStatus, ContractAction, Custody

from .custody_fixtures import *  # noqa: F403 - fixtures
from .custody_fixtures import sign_typed

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

NEW_TREASURY = "0x00000000000000000000000000000000000000bb"


def propose_treasury(actor, treasury=NEW_TREASURY) -> ContractAction:
    return actions.propose_contract_action(actor=actor, chain="bsc", kind="set_treasury",
                                           params={"treasury": treasury}, reason="runbook §8: new treasury multisig")


def sign(node, action: ContractAction, user) -> ContractAction:
    return actions.add_action_signature(actor=user, action=action, signature=sign_typed(node, user.account,
                                                                                          action.typed_data))


def confirm(action: ContractAction, timeout: float = 10) -> ContractAction:
    """The recovery step as beat runs it, pass after pass: a signed action is sent on one pass and confirmed on a
    later one, once anvil has mined it (under load its receipt can lag the broadcast by a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        actions.advance_contract_actions(chain="bsc")
        action.refresh_from_db()
        if action.status not in IN_FLIGHT or time.monotonic() > deadline:
            return action
        time.sleep(0.1)


def test_safe_proposal_fixes_the_safetx_with_the_safes_nonce_and_its_own_hash(safe_chain, staff):
    action = propose_treasury(staff["alice"])
    assert action.custody == Custody.SAFE and action.status == ActionStatus.PROPOSED
    assert action.safe_address == safe_chain.safe.address.lower()
    assert action.safe_nonce == safe_chain.safe_nonce()
    on_chain = safe_chain.safe.functions.getTransactionHash(
        safe_chain.escrow.address, 0, bytes.fromhex(action.calldata[2:]), 0, 0, 0, 0,
        "0x" + "00" * 20, "0x" + "00" * 20, action.safe_nonce).call()
    assert action.signing_hash == "0x" + on_chain.hex()


def test_safe_one_signature_is_not_enough_and_two_owners_execute(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    start, nonce_before = safe_chain.head(), safe_chain.safe_nonce()
    action = sign(safe_chain, propose_treasury(alice), alice)
    assert action.status == ActionStatus.PROPOSED  # one of two: the proposer's own signature alone
    with pytest.raises(ValidationError, match="only an approved action"):
        actions.execute_contract_action(actor=alice, action=action)
    action = sign(safe_chain, action, bob)
    assert action.status == ActionStatus.APPROVED and action.approved_by == bob
    sent = actions.execute_contract_action(actor=alice, action=action)
    assert sent.status == ActionStatus.SENT, sent.outcome
    assert confirm(sent).status == ActionStatus.CONFIRMED
    # Read back independently: the treasury moved, the Safe's nonce rose by exactly one, the relayer sent it.
    assert safe_chain.escrow.functions.treasury().call().lower() == NEW_TREASURY
    assert safe_chain.safe_nonce() == nonce_before + 1
    relayed = safe_chain.sent_by(safe_chain.relayer, start)
    assert [tx["hash"].hex().removeprefix("0x") for tx in relayed] == [sent.tx_hash.removeprefix("0x")]
    assert relayed[0]["to"] == safe_chain.safe.address
    assert safe_chain.relayer not in safe_chain.safe_owners
    assert verify_audit_chain().ok
    assert AuditLog.objects.filter(action="add_action_signature", object_id=str(action.pk)).count() == 2


def test_safe_signature_from_a_non_owner_is_refused_naming_the_signer(safe_chain, staff):
    action = propose_treasury(staff["alice"])
    with pytest.raises(ValidationError) as err:
        sign(safe_chain, action, staff["dave"])
    text = " ".join(err.value.messages)
    assert staff["dave"].account.lower() in text and "dave" in text and "not an owner" in text
    assert not ActionSignature.objects.filter(action=action).exists()


@pytest.mark.parametrize("field,value", [("nonce", "99"), ("data", "0x8456cb59")])
def test_safe_signature_over_another_nonce_or_calldata_is_refused(safe_chain, staff, field, value):
    action = propose_treasury(staff["alice"])
    other = {**action.typed_data, "message": {**action.typed_data["message"], field: value}}
    signature = sign_typed(safe_chain, staff["bob"].account, other)
    with pytest.raises(ValidationError) as err:
        actions.add_action_signature(actor=staff["bob"], action=action, signature=signature)
    text = " ".join(err.value.messages)
    assert "bob" in text and "recovers to 0x" in text and "another SafeTx" in text
    assert not ActionSignature.objects.filter(action=action).exists()


def test_safe_signature_replayed_from_an_executed_safetx_is_refused(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    first = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    assert confirm(actions.execute_contract_action(actor=alice, action=first)).status == ActionStatus.CONFIRMED
    bobs = first.signatures.get(signed_by=bob).signature
    second = propose_treasury(alice, "0x00000000000000000000000000000000000000cc")
    with pytest.raises(ValidationError) as err:
        actions.add_action_signature(actor=bob, action=second, signature=bobs)
    text = " ".join(err.value.messages)
    assert f"#{first.pk}" in text and "bob" in text and bob.account.lower() in text


def test_safe_owners_changed_on_chain_after_signing_refuses_execution_before_sending(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    start = safe_chain.head()
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    assert action.status == ActionStatus.APPROVED
    # The Safe swaps bob for another address (as a module could: the Safe's nonce does not move).
    owners = safe_chain.safe.functions.getOwners().call()
    prev = owners[owners.index(bob.account) - 1] if owners.index(bob.account) else "0x" + "00" * 19 + "01"
    safe_chain.as_safe(safe_chain.safe.functions.swapOwner(Web3.to_checksum_address(prev), bob.account,
                                                            safe_chain.accounts[29]))
    relayer_nonce = safe_chain.w3.eth.get_transaction_count(safe_chain.relayer)
    with pytest.raises(ValidationError) as err:
        actions.execute_contract_action(actor=alice, action=action)
    assert "bob" in " ".join(err.value.messages) and "no longer an owner" in " ".join(err.value.messages)
    action.refresh_from_db()
    assert action.status == ActionStatus.PROPOSED and not action.raw_tx and action.tx_hash is None
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == relayer_nonce
    assert safe_chain.sent_by(safe_chain.relayer, start + 1) == []
    assert safe_chain.escrow.functions.treasury().call() != Web3.to_checksum_address(NEW_TREASURY)


def test_safe_nonce_consumed_outside_the_back_office_is_marked_stale_and_never_sent(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, propose_treasury(alice), alice)
    safe_chain.exec_as_owners(safe_chain.escrow.functions.setPlatformFeeBps(150))
    counts = actions.advance_contract_actions(chain="bsc")
    action.refresh_from_db()
    assert counts["stale"] == 1 and action.status == ActionStatus.STALE
    assert "outside the back office" in action.outcome
    with pytest.raises(ValidationError):
        sign(safe_chain, action, bob)
    with pytest.raises(ValidationError, match="only an approved action"):
        actions.execute_contract_action(actor=alice, action=action)
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == 0


def test_safe_approved_action_whose_nonce_was_consumed_is_stale_at_execution(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    safe_chain.exec_as_owners(safe_chain.escrow.functions.setPlatformFeeBps(150))
    result = actions.execute_contract_action(actor=alice, action=action)
    assert result.status == ActionStatus.STALE and not result.raw_tx
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == 0


def test_safe_crash_after_signing_before_broadcast_recovery_sends_the_same_bytes(safe_chain, staff, monkeypatch):
    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    real = transactions.broadcast

    def dead_rpc(*args, **kwargs):
        from chain.rpc import ProviderUnavailable

        raise ProviderUnavailable("injected: connection dropped")

    monkeypatch.setattr(transactions, "broadcast", dead_rpc)
    signed = actions.execute_contract_action(actor=alice, action=action)
    assert signed.status == ActionStatus.SIGNED and signed.raw_tx and signed.tx_data.startswith("0x6a761202")
    recorded = (signed.raw_tx, signed.tx_hash)
    monkeypatch.setattr(transactions, "broadcast", real)
    assert confirm(signed).status == ActionStatus.CONFIRMED
    assert (signed.raw_tx, signed.tx_hash) == recorded
    assert len(safe_chain.logs("TreasuryUpdated", 0)) == 1
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == 1


def test_safe_crash_after_broadcast_before_commit_has_one_on_chain_effect(safe_chain, staff, monkeypatch):
    alice, bob = staff["alice"], staff["bob"]
    nonce_before = safe_chain.safe_nonce()
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    real = transitions.mark_action
    crashed = []

    def crash_on_first_sent(target, status, **kwargs):
        if status == ActionStatus.SENT and not crashed:
            crashed.append(True)
            raise RuntimeError("injected crash after broadcast")
        return real(target, status, **kwargs)

    monkeypatch.setattr(transitions, "mark_action", crash_on_first_sent)
    with pytest.raises(RuntimeError):
        actions.execute_contract_action(actor=alice, action=action)
    action.refresh_from_db()
    assert action.status == ActionStatus.SIGNED
    monkeypatch.setattr(transitions, "mark_action", real)
    assert confirm(action).status == ActionStatus.CONFIRMED
    assert confirm(action).status == ActionStatus.CONFIRMED  # running recovery again changes nothing
    assert len(safe_chain.logs("TreasuryUpdated", 0)) == 1
    assert safe_chain.safe_nonce() == nonce_before + 1
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == 1


def test_safe_action_cannot_be_approved_without_signing(safe_chain, staff):
    action = propose_treasury(staff["alice"])
    with pytest.raises(ValidationError, match="signing the SafeTx"):
        actions.approve_contract_action(actor=staff["bob"], action=action)


def test_safe_one_person_counts_once_whatever_keys_they_hold_enforced_by_the_database(safe_chain, staff):
    from django.db import IntegrityError, transaction

    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, propose_treasury(alice), bob)
    with pytest.raises(IntegrityError), transaction.atomic():
        ActionSignature.objects.create(action=action, signer_address=staff["carol"].account.lower(), signed_by=bob,
                                       signature="0x" + "11" * 65, source="pasted")


def test_safe_stuck_transaction_replaced_by_its_approver_resends_the_same_safetx(safe_chain, staff, monkeypatch,
                                                                                  client):
    from django.urls import reverse

    from chain.rpc import ProviderUnavailable

    alice, bob = staff["alice"], staff["bob"]
    nonce_before = safe_chain.safe_nonce()
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    assert action.approved_by == bob

    def dead_rpc(*args, **kwargs):
        raise ProviderUnavailable("injected: connection dropped")

    real = transactions.broadcast
    monkeypatch.setattr(transactions, "broadcast", dead_rpc)
    stuck = actions.execute_contract_action(actor=alice, action=action)
    assert stuck.status == ActionStatus.SIGNED
    monkeypatch.setattr(transactions, "broadcast", real)
    # The approver asks for the higher fee, from the action's page: no IntegrityError, no 500.
    client.force_login(bob)
    response = client.post(reverse("admin:ops_contractaction_replace", args=[stuck.pk]),
                           {"reason": "stuck at a low fee"})
    replacement = ContractAction.objects.get(replaces=stuck)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:ops_contractaction_change", args=[replacement.pk])
    # The same signed SafeTx, recorded as the owners' decision it is; bob is the actor of its audit row.
    assert replacement.status == ActionStatus.APPROVED and replacement.tx_data == stuck.tx_data
    assert (replacement.proposed_by, replacement.approved_by) == (alice, bob)
    assert AuditLog.objects.get(action="replace_contract_action", object_id=str(replacement.pk)).actor_label == "bob"
    sent = actions.execute_contract_action(actor=bob, action=replacement)
    assert sent.status == ActionStatus.SENT and sent.nonce == stuck.nonce, sent.outcome
    assert sent.max_fee_per_gas >= stuck.max_fee_per_gas * 1125 / 1000
    assert confirm(sent).status == ActionStatus.CONFIRMED
    stuck.refresh_from_db()
    assert stuck.status == ActionStatus.REPLACED
    assert safe_chain.escrow.functions.treasury().call().lower() == NEW_TREASURY
    assert safe_chain.safe_nonce() == nonce_before + 1 and len(safe_chain.logs("TreasuryUpdated", 0)) == 1
