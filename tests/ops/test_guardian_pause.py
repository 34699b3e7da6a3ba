"""RB-05 in safe custody: one guardian pauses at once through the module; unpause needs the Safe's threshold."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from eth_utils import function_signature_to_4byte_selector
from web3 import Web3

from ops.actions import services as actions
from ops.models import ActionStatus, ContractAction, Custody, PlatformFlag

from .custody_fixtures import *  # noqa: F403 - fixtures
from .custody_fixtures import sign_typed

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


@pytest.fixture
def trades_on(db):
    flag, _ = PlatformFlag.objects.get_or_create(key="TRADES_ENABLED", defaults={"value": True})
    return flag


def test_guardian_emergency_stop_pauses_with_one_person(safe_chain, staff, trades_on):
    alice = staff["alice"]
    stop = actions.emergency_stop(actor=alice, reason="RB-05: exploit suspected", chains=["bsc"])
    assert PlatformFlag.get("TRADES_ENABLED") is False
    [pause] = stop
    assert pause.custody == Custody.GUARDIAN and pause.status == ActionStatus.PROPOSED
    assert safe_chain.escrow.functions.paused().call() is False
    done = actions.add_action_signature(actor=alice, action=pause,
                                        signature=sign_typed(safe_chain, alice.account, pause.typed_data))
    assert done.status == ActionStatus.SENT, done.outcome
    assert safe_chain.escrow.functions.paused().call() is True
    assert safe_chain.module.functions.nonce().call() == 1
    tx = safe_chain.w3.eth.get_transaction(done.tx_hash)
    assert tx["from"] == safe_chain.relayer and tx["to"] == safe_chain.module.address


def test_guardian_pause_signature_of_a_non_guardian_is_refused(safe_chain, staff):
    pause = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05 drill")
    with pytest.raises(ValidationError, match="not a guardian"):
        actions.add_action_signature(actor=staff["dave"], action=pause,
                                     signature=sign_typed(safe_chain, staff["dave"].account, pause.typed_data))
    assert safe_chain.escrow.functions.paused().call() is False


def test_guardian_unpause_goes_through_the_safe_threshold(safe_chain, staff, trades_on):
    alice, bob = staff["alice"], staff["bob"]
    [pause] = actions.emergency_stop(actor=alice, reason="RB-05 drill", chains=["bsc"])
    actions.add_action_signature(actor=alice, action=pause,
                                 signature=sign_typed(safe_chain, alice.account, pause.typed_data))
    [unpause] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"])
    assert unpause.custody == Custody.SAFE
    unpause = actions.add_action_signature(actor=alice, action=unpause,
                                           signature=sign_typed(safe_chain, alice.account, unpause.typed_data))
    assert unpause.status == ActionStatus.PROPOSED  # a guardian alone cannot unpause
    unpause = actions.add_action_signature(actor=bob, action=unpause,
                                           signature=sign_typed(safe_chain, bob.account, unpause.typed_data))
    assert unpause.status == ActionStatus.APPROVED
    safe_chain.automine(False)
    sent = actions.execute_contract_action(actor=bob, action=unpause)
    assert sent.status == ActionStatus.SENT, sent.outcome
    actions.advance_contract_actions(chain="bsc")
    assert PlatformFlag.get("TRADES_ENABLED") is False  # sent, not yet mined
    safe_chain.rpc("evm_mine")
    safe_chain.automine(True)
    actions.advance_contract_actions(chain="bsc")
    unpause.refresh_from_db()
    assert unpause.status == ActionStatus.CONFIRMED
    assert safe_chain.escrow.functions.paused().call() is False
    assert PlatformFlag.get("TRADES_ENABLED") is True


def test_guardian_pause_signature_after_its_deadline_is_refused_and_not_recorded(safe_chain, staff, settings):
    alice = staff["alice"]
    settings.GUARDIAN_PAUSE_SECONDS = 5
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    signature = sign_typed(safe_chain, alice.account, pause.typed_data)
    safe_chain.increase_time(10)
    with pytest.raises(ValidationError) as err:
        actions.add_action_signature(actor=alice, action=pause, signature=signature)
    text = " ".join(err.value.messages)
    assert "expired" in text and "nothing was recorded" in text and "Start the pause again" in text
    pause.refresh_from_db()
    assert pause.status == ActionStatus.PROPOSED and not pause.signatures.exists()
    assert safe_chain.escrow.functions.paused().call() is False


def test_guardian_pause_started_twice_in_one_block_gives_two_pauses_waiting(safe_chain, staff):
    """Two operators reacting to one incident in the same block: the same module nonce and deadline, so the same
    hash; both wait for a guardian (one open action per SafeTx is for SafeTxs, not guardian pauses)."""
    first = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05: drained wallet")
    second = actions.pause_now(actor=staff["bob"], chain="bsc", reason="RB-05: same incident")
    assert first.signing_hash == second.signing_hash
    assert {first.status, second.status} == {ActionStatus.PROPOSED}


def test_guardian_pause_left_unsigned_past_its_deadline_goes_stale_with_a_p1(safe_chain, staff, settings):
    from backoffice.alerts.models import Alert

    settings.GUARDIAN_PAUSE_SECONDS = 5
    waiting = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05 drill")
    assert actions.advance_contract_actions(chain="bsc")["stale"] == 0, "inside its window: still waiting"
    waiting.refresh_from_db()
    assert waiting.status == ActionStatus.PROPOSED
    safe_chain.increase_time(10)
    safe_chain.mine()
    assert actions.advance_contract_actions(chain="bsc")["stale"] == 1
    waiting.refresh_from_db()
    assert waiting.status == ActionStatus.STALE and "no guardian signed it before" in waiting.outcome
    alert = Alert.objects.get(key=f"guardian-pause-expired:bsc:{waiting.pk}")
    assert alert.severity == "P1" and "NOT paused" in alert.title
    assert safe_chain.escrow.functions.paused().call() is False
    assert actions.advance_contract_actions(chain="bsc")["stale"] == 0, "once"


def test_guardian_pause_expiring_after_the_escrow_was_paused_another_way_raises_nothing(safe_chain, staff, settings):
    from backoffice.alerts.models import Alert

    settings.GUARDIAN_PAUSE_SECONDS = 5
    waiting = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05 drill")
    safe_chain.exec_as_owners(safe_chain.escrow.functions.pause())  # the owners paused it through the Safe
    safe_chain.increase_time(10)
    safe_chain.mine()
    actions.advance_contract_actions(chain="bsc")
    waiting.refresh_from_db()
    assert waiting.status == ActionStatus.STALE
    assert not Alert.objects.filter(key__startswith="guardian-pause-expired").exists()


def test_guardian_pause_whose_transaction_fails_raises_a_p1_naming_it(safe_chain, staff):
    """Signed and sent, but its relayer nonce went to another transaction before it was mined (dropped from the
    pool): failed, the escrow not paused, and someone is paged."""
    from backoffice.alerts.models import Alert

    alice = staff["alice"]
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    safe_chain.automine(False)
    sent = actions.add_action_signature(actor=alice, action=pause,
                                        signature=sign_typed(safe_chain, alice.account, pause.typed_data))
    assert sent.status == ActionStatus.SENT
    safe_chain.rpc("anvil_dropTransaction", [sent.tx_hash])
    safe_chain.rpc("eth_sendTransaction", [{"from": safe_chain.relayer, "to": safe_chain.relayer, "value": "0x0",
                                            "nonce": hex(sent.nonce)}])
    safe_chain.mine()
    safe_chain.automine(True)
    assert actions.advance_contract_actions(chain="bsc")["failed"] == 1
    sent.refresh_from_db()
    assert sent.status == ActionStatus.FAILED and safe_chain.escrow.functions.paused().call() is False
    alert = Alert.objects.get(key=f"guardian-pause-expired:bsc:{sent.pk}")
    assert alert.severity == "P1" and "NOT paused" in alert.title and "its transaction failed" in alert.message


def test_guardian_pause_signature_needs_the_execute_role_before_anything_is_recorded(safe_chain, staff):
    from django.contrib.auth.models import Permission
    from django.core.exceptions import PermissionDenied

    alice, bob = staff["alice"], staff["bob"]
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    bob.is_superuser = False
    bob.save(update_fields=["is_superuser"])
    bob.user_permissions.set(Permission.objects.filter(
        content_type__app_label="ops", codename__in=["view_contractaction", "approve_contractaction"]))
    approver = type(bob).objects.get(pk=bob.pk)  # a guardian key, the approve role, not the execute role
    with pytest.raises(PermissionDenied, match="execute role"):
        actions.add_action_signature(actor=approver, action=pause,
                                     signature=sign_typed(safe_chain, bob.account, pause.typed_data))
    pause.refresh_from_db()
    assert pause.status == ActionStatus.PROPOSED and not pause.signatures.exists()
    assert safe_chain.escrow.functions.paused().call() is False


def test_guardian_second_resume_request_names_the_unpause_already_waiting(safe_chain, staff, trades_on):
    alice = staff["alice"]
    [pause] = actions.emergency_stop(actor=alice, reason="RB-05 drill", chains=["bsc"])
    actions.add_action_signature(actor=alice, action=pause,
                                 signature=sign_typed(safe_chain, alice.account, pause.typed_data))
    [unpause] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"])
    with pytest.raises(ValidationError) as err:
        actions.request_resume(actor=staff["bob"], reason="fixed, again", chains=["bsc"])
    assert f"#{unpause.pk}" in " ".join(err.value.messages)
    assert ContractAction.objects.filter(kind="unpause").count() == 1


def test_guardian_route_is_for_pause_only_in_the_database(safe_chain, staff):
    pause = actions.pause_now(actor=staff["alice"], chain="bsc", reason="RB-05 drill")
    fields = {f.attname: getattr(pause, f.attname) for f in ContractAction._meta.concrete_fields if f.name != "id"}
    with pytest.raises(IntegrityError, match="contract_actions_guardian_pause_only"), transaction.atomic():
        ContractAction.objects.create(**{**fields, "kind": "unpause", "calldata": "0x3f4ba83a"})


def test_guardian_pause_signature_is_used_once(safe_chain, staff):
    alice = staff["alice"]
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    signature = sign_typed(safe_chain, alice.account, pause.typed_data)
    assert actions.add_action_signature(actor=alice, action=pause, signature=signature).status == ActionStatus.SENT
    safe_chain.as_safe(safe_chain.escrow.functions.unpause())
    again = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill again")
    assert again.safe_nonce == pause.safe_nonce + 1
    with pytest.raises(ValidationError, match=f"#{pause.pk}"):
        actions.add_action_signature(actor=alice, action=again, signature=signature)
    assert safe_chain.escrow.functions.paused().call() is False


def _sent_by_guardian(node, guardian: str, to: str, data: str) -> int:
    """A transaction the guardian signs themselves (anvil's unlocked account); its receipt status."""
    tx_hash = node.w3.eth.send_transaction({"from": guardian, "to": to, "data": data, "gas": 300_000})
    return node.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)["status"]


def test_guardian_cannot_make_the_safe_do_anything_but_pause(safe_chain):
    guardian = safe_chain.module.functions.guardians().call()[0]
    treasury_before = safe_chain.escrow.functions.treasury().call()
    new_treasury = Web3.to_checksum_address("0x" + "ee" * 20)

    def selector(signature: str) -> str:
        return "0x" + function_signature_to_4byte_selector(signature).hex()

    attempts = [
        # The module has no generic exec and no fallback: any other function of the escrow sent to it reverts.
        (safe_chain.module.address, selector("unpause()")),
        (safe_chain.module.address, safe_chain.escrow.functions.setTreasury(new_treasury)._encode_transaction_data()),
        # Guardians are managed by the Safe's threshold only.
        (safe_chain.module.address, safe_chain.module.functions.addGuardian(new_treasury)._encode_transaction_data()),
        # A guardian is not a module: the Safe refuses its module call (GS104).
        (safe_chain.safe.address, safe_chain.safe.functions.execTransactionFromModule(
            safe_chain.escrow.address, 0,
            safe_chain.escrow.functions.setTreasury(new_treasury)._encode_transaction_data(),
            0)._encode_transaction_data()),
    ]
    for to, data in attempts:
        assert _sent_by_guardian(safe_chain, guardian, to, data) == 0, (to, data[:10])
    assert safe_chain.escrow.functions.treasury().call() == treasury_before
    assert not safe_chain.module.functions.isGuardian(new_treasury).call()

    # The one thing it can do, from the guardian's own wallet: pause.
    assert _sent_by_guardian(safe_chain, guardian, safe_chain.module.address, selector("pause()")) == 1
    assert safe_chain.escrow.functions.paused().call() is True
    # And a paused escrow is not unpaused through the module either.
    assert _sent_by_guardian(safe_chain, guardian, safe_chain.module.address, selector("unpause()")) == 0
    assert safe_chain.escrow.functions.paused().call() is True


def test_guardian_resume_page_in_safe_custody_sends_the_requester_to_sign(safe_chain, staff, trades_on, client):
    from django.urls import reverse

    alice = staff["alice"]
    [pause] = actions.emergency_stop(actor=alice, reason="RB-05 drill", chains=["bsc"])
    actions.add_action_signature(actor=alice, action=pause, signature=sign_typed(safe_chain, alice.account,
                                                                                 pause.typed_data))
    client.force_login(alice)
    url = reverse("admin:ops_contractaction_resume")
    response = client.post(url, {"reason": "drill over"})
    unpause = ContractAction.objects.get(kind="unpause")
    assert unpause.custody == Custody.SAFE and unpause.status == ActionStatus.PROPOSED
    sign_url = reverse("admin:ops_contractaction_sign_group", args=[unpause.group])
    assert response.status_code == 302 and response["Location"] == sign_url
    # The pending request links the next owner to the same signing page, not to a database approval.
    assert f'href="{sign_url}"' in client.get(url).content.decode()


SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def eth_sign_form(node, account: str, digest: str) -> str:
    """The digest signed as a personal message (eth_sign), in the Safe's v + 4 form: valid for a Safe, not for
    the module's OpenZeppelin ECDSA."""
    raw = bytes.fromhex(node.rpc("eth_sign", [account, digest])[2:])
    return "0x" + (raw[:64] + bytes([raw[64] + 4])).hex()


def high_s_form(signature: str) -> str:
    """The same signature's malleable twin (n - s, the other v): ecrecover accepts it, OpenZeppelin refuses it."""
    raw = bytes.fromhex(signature[2:])
    s = SECP256K1_N - int.from_bytes(raw[32:64], "big")
    v = raw[64] if raw[64] >= 27 else raw[64] + 27
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - v])).hex()


@pytest.mark.parametrize("form", ["eth_sign", "high_s"])
def test_guardian_pause_signature_the_module_cannot_verify_is_refused_and_the_pause_survives(safe_chain, staff, form):
    alice = staff["alice"]
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    typed = sign_typed(safe_chain, alice.account, pause.typed_data)
    bad = eth_sign_form(safe_chain, alice.account, pause.signing_hash) if form == "eth_sign" else high_s_form(typed)
    with pytest.raises(ValidationError) as err:
        actions.add_action_signature(actor=alice, action=pause, signature=bad)
    assert "eth_signTypedData_v4" in " ".join(err.value.messages)
    pause.refresh_from_db()
    assert pause.status == ActionStatus.PROPOSED and not pause.signatures.exists() and not pause.raw_tx
    assert safe_chain.module.functions.nonce().call() == pause.safe_nonce
    # Nothing was burned: the typed-data signature still pauses at once.
    done = actions.add_action_signature(actor=alice, action=pause, signature=typed)
    assert done.status == ActionStatus.SENT, done.outcome
    assert safe_chain.escrow.functions.paused().call() is True


def test_guardian_module_reverts_are_named(safe_chain, staff):
    from chain import safe as chain_safe
    from chain import transactions

    alice, dave = staff["alice"], staff["dave"]
    pause = actions.pause_now(actor=alice, chain="bsc", reason="RB-05 drill")
    deadline = int(pause.typed_data["message"]["deadline"])

    def reason(signature: str) -> str:
        data = chain_safe.pause_by_signature_calldata(deadline=deadline, signature=bytes.fromhex(signature[2:]))
        sim = transactions.simulate("bsc", to=safe_chain.module.address, data=data, sender=safe_chain.relayer)
        assert not sim.ok
        return sim.reason

    assert reason(eth_sign_form(safe_chain, alice.account, pause.signing_hash)) == "ECDSAInvalidSignature()"
    high_s = high_s_form(sign_typed(safe_chain, alice.account, pause.typed_data))
    assert reason(high_s).startswith("ECDSAInvalidSignatureS(")
    assert reason(sign_typed(safe_chain, dave.account, pause.typed_data)) == f"NotGuardian({dave.account.lower()})"
