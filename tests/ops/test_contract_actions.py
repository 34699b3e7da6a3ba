"""Contract actions on a real anvil: four eyes, simulation, exactly-once sending, replacement, kill switch."""
from __future__ import annotations

import logging
import traceback

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from web3 import Web3

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from backoffice.devservices import ANVIL_OWNER_KEY
from chain import transactions
from chain.rpc import ProviderUnavailable
from ops.actions import services as actions
from ops.actions import transitions
from ops.models import ActionStatus, ContractAction, PlatformFlag

from .conftest import DAY

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

NEW_TREASURY = "0x00000000000000000000000000000000000000aa"


def propose(actor, kind, params=None, reason="runbook step", **kw):
    return actions.propose_contract_action(actor=actor, chain="bsc", kind=kind, params=params or {}, reason=reason,
                                           **kw)


def approved(alice, bob, kind, params=None):
    action = propose(alice, kind, params)
    return actions.approve_contract_action(actor=bob, action=action)


def run_to_confirmed(alice, bob, kind, params=None) -> ContractAction:
    """propose (alice) → approve (bob) → execute (alice) → advance → confirmed."""
    action = approved(alice, bob, kind, params)
    sent = actions.execute_contract_action(actor=alice, action=action)
    assert sent.status == ActionStatus.SENT, sent.outcome
    actions.advance_contract_actions(chain="bsc")
    sent.refresh_from_db()
    assert sent.status == ActionStatus.CONFIRMED, sent.outcome
    return sent


def assert_mined_by_owner(chain, action: ContractAction) -> None:
    tx = chain.w3.eth.get_transaction(action.tx_hash)
    receipt = chain.w3.eth.wait_for_transaction_receipt(action.tx_hash, timeout=30)
    assert tx["from"] == chain.owner and tx["nonce"] == action.nonce and receipt["status"] == 1
    assert tx["to"].lower() == chain.escrow.address.lower()


def raw_sql(sql: str, params: list) -> None:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(sql, params)


# ---------------------------------------------------------------------------- each action end to end


@pytest.mark.parametrize("kind, params, check", [
    ("set_treasury", {"treasury": NEW_TREASURY},
     lambda c: c.escrow.functions.treasury().call().lower() == NEW_TREASURY),
    ("set_platform_fee", {"bps": 250}, lambda c: c.escrow.functions.platformFeeBps().call() == 250),
    ("set_arbitrator_fee", {"bps": 4000}, lambda c: c.escrow.functions.arbitratorFeeBps().call() == 4000),
    ("set_timeouts", {"seller_timeout": 7200, "buyer_timeout": 3 * DAY + 1, "dispute_timeout": 5 * DAY},
     lambda c: (c.escrow.functions.sellerTimeout().call(), c.escrow.functions.buyerTimeout().call(),
                c.escrow.functions.disputeTimeout().call()) == (7200, 3 * DAY + 1, 5 * DAY)),
    ("set_supported_token", {"token": "USDC", "supported": False},
     lambda c: c.escrow.functions.supportedTokens(c.tokens["USDC"].address).call() is False),
])
def test_contract_action_setter_end_to_end_changes_the_contract(chain, alice, bob, kind, params, check):
    if kind == "set_supported_token":
        params = {**params, "token": chain.tokens["USDC"].address}
    assert not check(chain)
    action = run_to_confirmed(alice, bob, kind, params)
    assert check(chain)
    assert_mined_by_owner(chain, action)
    assert action.proposed_by == alice and action.approved_by == bob and action.receipt_block
    assert verify_audit_chain().ok


def test_contract_action_pause_and_unpause_end_to_end(chain, alice, bob):
    assert chain.escrow.functions.paused().call() is False
    run_to_confirmed(alice, bob, "pause")
    assert chain.escrow.functions.paused().call() is True
    unpause = run_to_confirmed(bob, alice, "unpause")
    assert chain.escrow.functions.paused().call() is False
    assert_mined_by_owner(chain, unpause)


def test_contract_action_auto_expire_refunds_the_buyer(chain, alice, bob):
    order_id = chain.create_order(amount=700 * 10**18)
    before = chain.balance("USDT", chain.buyer)
    chain.increase_time(DAY + 60)
    action = run_to_confirmed(alice, bob, "auto_expire", {"order_id": order_id})
    assert chain.order(order_id)["status"] == "expired"
    assert chain.balance("USDT", chain.buyer) - before == 700 * 10**18
    assert len(chain.logs("OrderExpired", action.receipt_block)) == 1
    assert action.order_onchain_id == order_id


def test_contract_action_auto_release_pays_the_seller(chain, alice, bob):
    order_id = chain.create_order(amount=1_000 * 10**18)
    chain.deliver(order_id)
    fee = chain.order(order_id)["platform_fee"]
    seller_before = chain.balance("USDT", chain.seller)
    treasury_before = chain.balance("USDT", chain.treasury)
    chain.increase_time(3 * DAY + 60)
    run_to_confirmed(alice, bob, "auto_release", {"order_id": order_id})
    assert chain.order(order_id)["status"] == "completed"
    assert chain.balance("USDT", chain.seller) - seller_before == 1_000 * 10**18 - fee
    assert chain.balance("USDT", chain.treasury) - treasury_before == fee


def test_contract_action_owner_resolve_dispute_refunds_the_buyer(chain, alice, bob):
    order_id = chain.create_order(amount=500 * 10**18)
    chain.dispute(order_id)
    buyer_before = chain.balance("USDT", chain.buyer)
    chain.increase_time(3 * DAY + 60)
    run_to_confirmed(alice, bob, "owner_resolve", {"order_id": order_id, "favor_buyer": True})
    assert chain.order(order_id)["status"] == "resolved_buyer"
    assert chain.balance("USDT", chain.buyer) - buyer_before == 500 * 10**18  # no arbitrator fee on the owner path


# ---------------------------------------------------------------------------- four eyes


def test_approve_contract_action_by_the_proposer_is_refused(chain, alice):
    action = propose(alice, "set_platform_fee", {"bps": 150})
    with pytest.raises(ValidationError) as exc:
        actions.approve_contract_action(actor=alice, action=action)
    assert "approved_by" in exc.value.message_dict
    action.refresh_from_db()
    assert action.status == ActionStatus.PROPOSED and action.approved_by is None


def test_contract_action_self_approval_is_refused_by_the_database(chain, alice):
    action = propose(alice, "set_platform_fee", {"bps": 150})
    with pytest.raises(IntegrityError, match="contract_actions_four_eyes"):
        raw_sql("UPDATE ops_contract_actions SET approved_by_id = proposed_by_id, status = 'approved', "
                "approved_at = now() WHERE id = %s", [action.pk])


def test_contract_action_self_approval_of_a_pause_is_allowed_by_the_database(chain, alice):
    action = propose(alice, "pause")
    raw_sql("UPDATE ops_contract_actions SET approved_by_id = proposed_by_id, status = 'approved', "
            "approved_at = now() WHERE id = %s", [action.pk])
    action.refresh_from_db()
    assert action.approved_by_id == alice.pk


def test_pause_now_by_one_operator_pauses_at_once(chain, alice):
    action = actions.pause_now(actor=alice, chain="bsc", reason="RB-05: exploit suspected")
    assert action.status == ActionStatus.SENT and action.approved_by == alice
    assert chain.escrow.functions.paused().call() is True


# ---------------------------------------------------------------------------- simulation blocks


def test_propose_contract_action_reverting_simulation_shows_the_decoded_reason(chain, alice):
    order_id = chain.create_order()
    deadline = chain.order(order_id)["seller_deadline"]
    with pytest.raises(ValidationError) as exc:
        propose(alice, "auto_expire", {"order_id": order_id})
    assert f"DeadlineNotReached({deadline})" in str(exc.value.message_dict["params"])
    assert not ContractAction.objects.exists()


def test_execute_contract_action_precondition_changed_is_rejected_and_nothing_signed(chain, alice, bob):
    chain.send(chain.escrow.functions.pause(), chain.owner)
    action = approved(alice, bob, "unpause")
    chain.send(chain.escrow.functions.unpause(), chain.owner)  # someone else got there first
    nonce_before, head_before = chain.owner_nonce("pending"), chain.head()
    done = actions.execute_contract_action(actor=alice, action=action)
    assert done.status == ActionStatus.REJECTED
    assert done.outcome == "simulation before signing reverted: ExpectedPause()"
    assert done.nonce is None and done.tx_hash is None and done.raw_tx == ""
    assert chain.owner_nonce("pending") == nonce_before and chain.head() == head_before


# ---------------------------------------------------------------------------- the proposal is frozen


@pytest.mark.parametrize("column, value", [
    ("calldata", "0x8456cb59"), ("params", '{"bps": 999}'), ("reason", "something else"),
])
def test_contract_action_proposal_cannot_be_updated(chain, alice, column, value):
    action = propose(alice, "set_platform_fee", {"bps": 150})
    with pytest.raises(Exception, match="cannot change"):
        raw_sql(f"UPDATE ops_contract_actions SET {column} = %s WHERE id = %s", [value, action.pk])


@pytest.mark.parametrize("column, value", [
    ("raw_tx", "0x02"), ("nonce", "999"), ("tx_hash", "0x" + "ab" * 32),
])
def test_contract_action_signed_transaction_cannot_be_updated(chain, alice, bob, column, value):
    action = actions.execute_contract_action(actor=alice, action=approved(alice, bob, "set_platform_fee",
                                                                          {"bps": 150}))
    assert action.raw_tx
    with pytest.raises(Exception, match="signed transaction cannot change"):
        raw_sql(f"UPDATE ops_contract_actions SET {column} = %s WHERE id = %s", [value, action.pk])


def test_contract_action_cannot_be_deleted(chain, alice):
    action = propose(alice, "set_platform_fee", {"bps": 150})
    with pytest.raises(Exception, match="DELETE is not allowed"):
        raw_sql("DELETE FROM ops_contract_actions WHERE id = %s", [action.pk])


# ---------------------------------------------------------------------------- crashes: exactly one effect


def assert_one_treasury_change(chain, action: ContractAction, from_block: int, nonce_before: int) -> None:
    action.refresh_from_db()
    assert action.status == ActionStatus.CONFIRMED, action.outcome
    assert chain.owner_nonce() == nonce_before + 1
    logs = chain.logs("TreasuryUpdated", from_block)
    assert len(logs) == 1
    assert "0x" + logs[0]["transactionHash"].hex().removeprefix("0x") == action.tx_hash
    owner_txs = chain.owner_txs(from_block)
    assert ["0x" + t["hash"].hex().removeprefix("0x") for t in owner_txs] == [action.tx_hash]
    assert chain.escrow.functions.treasury().call().lower() == NEW_TREASURY


def test_contract_action_crash_after_signing_before_broadcast_is_finished_by_recovery(chain, alice, bob,
                                                                                     monkeypatch):
    action = approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY})
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    real_broadcast = transactions.broadcast
    calls = []

    def broadcast_down_once(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise ProviderUnavailable("every provider failed")
        return real_broadcast(*args, **kwargs)

    monkeypatch.setattr(transactions, "broadcast", broadcast_down_once)
    signed = actions.execute_contract_action(actor=alice, action=action)
    assert signed.status == ActionStatus.SIGNED and signed.raw_tx
    assert chain.head() + 1 == start  # nothing reached the chain
    recorded_raw = signed.raw_tx
    actions.advance_contract_actions(chain="bsc")  # re-broadcasts the recorded bytes
    actions.advance_contract_actions(chain="bsc")  # confirms
    assert calls[1][1] == recorded_raw
    assert_one_treasury_change(chain, signed, start, nonce_before)


def test_contract_action_crash_after_broadcast_before_commit_sends_once(chain, alice, bob, monkeypatch):
    action = approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY})
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    real_mark = transitions.mark_action
    crashed = []

    def crash_on_first_sent(action, status, **kwargs):
        if status == ActionStatus.SENT and not crashed:
            crashed.append(action.pk)
            raise RuntimeError("worker killed after the broadcast")
        return real_mark(action, status, **kwargs)

    monkeypatch.setattr(transitions, "mark_action", crash_on_first_sent)
    with pytest.raises(RuntimeError, match="worker killed"):
        actions.execute_contract_action(actor=alice, action=action)
    action.refresh_from_db()
    assert action.status == ActionStatus.SIGNED and crashed
    # It did go out (under load anvil can answer the broadcast a moment before the receipt exists).
    assert chain.w3.eth.wait_for_transaction_receipt(action.tx_hash, timeout=30)["status"] == 1
    actions.advance_contract_actions(chain="bsc")
    actions.advance_contract_actions(chain="bsc")
    assert_one_treasury_change(chain, action, start, nonce_before)


def test_contract_action_crash_after_receipt_before_confirmation_confirms_once(chain, alice, bob, monkeypatch):
    action = approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY})
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    sent = actions.execute_contract_action(actor=alice, action=action)
    assert sent.status == ActionStatus.SENT
    chain.mine()
    real_mark = transitions.mark_action
    crashed = []

    def crash_on_first_confirm(action, status, **kwargs):
        if status == ActionStatus.CONFIRMED and not crashed:
            crashed.append(action.pk)
            raise RuntimeError("worker killed before recording the confirmation")
        return real_mark(action, status, **kwargs)

    monkeypatch.setattr(transitions, "mark_action", crash_on_first_confirm)
    with pytest.raises(RuntimeError, match="worker killed"):
        actions.advance_contract_actions(chain="bsc")
    sent.refresh_from_db()
    assert sent.status == ActionStatus.SENT
    first = actions.advance_contract_actions(chain="bsc")
    second = actions.advance_contract_actions(chain="bsc")
    assert first["confirmed"] == 1 and second == {"sent": 0, "confirmed": 0, "failed": 0, "replaced": 0, "stale": 0}
    assert_one_treasury_change(chain, sent, start, nonce_before)
    assert AuditLog.objects.filter(action="mark_contract_action_confirmed", object_id=str(sent.pk)).count() == 1


def test_contract_action_mined_while_its_receipt_lags_is_confirmed_not_failed(chain, alice, bob, monkeypatch):
    action = approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY})
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    sent = actions.execute_contract_action(actor=alice, action=action)
    assert chain.w3.eth.wait_for_transaction_receipt(sent.tx_hash, timeout=30)["status"] == 1
    real_receipt = transactions.receipt
    asked = []

    def lagging_receipt(chain_name, tx_hash):
        # The provider that answers first has not indexed the block yet (as after a failover); the nonce
        # read that follows already counts the transaction.
        asked.append(tx_hash)
        return None if len(asked) == 1 else real_receipt(chain_name, tx_hash)

    monkeypatch.setattr(transactions, "receipt", lagging_receipt)
    counts = actions.advance_contract_actions(chain="bsc")
    assert asked[0] == sent.tx_hash and counts["failed"] == 0
    assert_one_treasury_change(chain, sent, start, nonce_before)
    assert not AuditLog.objects.filter(action="mark_contract_action_failed").exists()


# ---------------------------------------------------------------------------- stuck transaction


def test_contract_action_stuck_transaction_is_replaced_and_confirmed(chain, alice, bob):
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    chain.automine(False)
    original = actions.execute_contract_action(
        actor=alice, action=approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY}))
    assert original.status == ActionStatus.SENT
    assert chain.rpc("eth_getTransactionReceipt", [original.tx_hash]) is None
    replacement = actions.replace_contract_action(actor=alice, action=original, reason="stuck at a low fee")
    with pytest.raises(ValidationError):
        actions.approve_contract_action(actor=alice, action=replacement)
    actions.approve_contract_action(actor=bob, action=replacement)
    replacement = actions.execute_contract_action(actor=bob, action=replacement)
    assert replacement.status == ActionStatus.SENT, replacement.outcome
    assert replacement.nonce == original.nonce and replacement.tx_hash != original.tx_hash
    assert replacement.max_fee_per_gas >= original.max_fee_per_gas * 1125 / 1000
    assert replacement.max_priority_fee_per_gas >= original.max_priority_fee_per_gas * 1125 / 1000
    chain.rpc("evm_mine")
    chain.automine(True)
    actions.advance_contract_actions(chain="bsc")
    original.refresh_from_db()
    replacement.refresh_from_db()
    assert replacement.status == ActionStatus.CONFIRMED and original.status == ActionStatus.REPLACED
    assert chain.rpc("eth_getTransactionReceipt", [original.tx_hash]) is None
    assert_one_treasury_change(chain, replacement, start, nonce_before)


def test_contract_action_stuck_replacement_is_replaced_again_with_higher_fees(chain, alice, bob):
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    chain.automine(False)
    original = actions.execute_contract_action(
        actor=alice, action=approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY}))
    first = actions.replace_contract_action(actor=alice, action=original, reason="stuck")
    with pytest.raises(ValidationError, match="already has a replacement"):
        actions.replace_contract_action(actor=alice, action=original, reason="again, too early")
    actions.approve_contract_action(actor=bob, action=first)
    first = actions.execute_contract_action(actor=bob, action=first)
    second = actions.replace_contract_action(actor=alice, action=first, reason="the replacement is stuck too")
    assert second.replaces_id == original.pk  # every attempt hangs off the original's nonce
    actions.approve_contract_action(actor=bob, action=second)
    second = actions.execute_contract_action(actor=bob, action=second)
    assert second.nonce == original.nonce
    assert second.max_fee_per_gas >= first.max_fee_per_gas * 1125 / 1000
    assert second.max_priority_fee_per_gas >= first.max_priority_fee_per_gas * 1125 / 1000
    chain.rpc("evm_mine")
    chain.automine(True)
    actions.advance_contract_actions(chain="bsc")
    statuses = {a.pk: a.status for a in ContractAction.objects.filter(pk__in=[original.pk, first.pk, second.pk])}
    assert statuses == {original.pk: ActionStatus.REPLACED, first.pk: ActionStatus.REPLACED,
                        second.pk: ActionStatus.CONFIRMED}
    assert_one_treasury_change(chain, second, start, nonce_before)


# ---------------------------------------------------------------------------- nonces


def test_execute_contract_action_nonces_are_consecutive(chain, alice, bob):
    first_nonce = chain.owner_nonce()
    ready = [approved(alice, bob, "set_platform_fee", {"bps": bps}) for bps in (110, 120, 130)]
    ready.append(approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY}))
    # Each fee change was simulated from 100 bps; once the first is sent, the next one's old value differs from
    # its proposal's (the chain moved): the executor acknowledges that, as the execute page asks.
    done = [actions.execute_contract_action(actor=alice, action=a, acknowledge_effects=True) for a in ready]
    assert [a.nonce for a in done] == [first_nonce + i for i in range(4)]
    actions.advance_contract_actions(chain="bsc")
    assert all(a.status == ActionStatus.CONFIRMED for a in ContractAction.objects.all())
    assert chain.owner_nonce() == first_nonce + 4


def test_execute_contract_action_rejected_at_execution_does_not_consume_a_nonce(chain, alice, bob):
    first_nonce = chain.owner_nonce()
    a = actions.execute_contract_action(actor=alice, action=approved(alice, bob, "set_platform_fee", {"bps": 110}))
    chain.send(chain.escrow.functions.pause(), chain.owner)  # nonce first + 1
    unpause = approved(alice, bob, "unpause")
    chain.send(chain.escrow.functions.unpause(), chain.owner)  # nonce first + 2
    rejected = actions.execute_contract_action(actor=alice, action=unpause)
    b = actions.execute_contract_action(actor=alice, action=approved(alice, bob, "set_platform_fee", {"bps": 120}))
    assert rejected.status == ActionStatus.REJECTED and rejected.nonce is None
    assert (a.nonce, b.nonce) == (first_nonce, first_nonce + 3)
    actions.advance_contract_actions(chain="bsc")
    assert chain.owner_nonce() == first_nonce + 4
    assert chain.escrow.functions.platformFeeBps().call() == 120


# ---------------------------------------------------------------------------- kill switch


def test_emergency_stop_pauses_and_turns_trades_off_then_resume_needs_a_second_person(chain, alice, bob,
                                                                                        trades_flag):
    stopped = actions.emergency_stop(actor=alice, reason="exploit suspected", chains=["bsc"])
    assert [a.status for a in stopped] == [ActionStatus.SENT]
    assert chain.escrow.functions.paused().call() is True
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is False
    assert AuditLog.objects.filter(action="set_platform_flag", actor_label="alice").exists()
    assert AuditLog.objects.filter(action="sign_contract_action", object_id=str(stopped[0].pk)).exists()

    requested = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"])
    group = requested[0].group
    with pytest.raises(ValidationError):
        actions.approve_resume(actor=alice, group=group)
    assert chain.escrow.functions.paused().call() is True
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is False

    chain.automine(False)
    done = actions.approve_resume(actor=bob, group=group)
    assert [a.status for a in done] == [ActionStatus.SENT]
    actions.advance_contract_actions(chain="bsc")
    assert chain.escrow.functions.paused().call() is True  # sent, not mined: trading stays off
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is False
    chain.rpc("evm_mine")
    chain.automine(True)
    assert actions.advance_contract_actions(chain="bsc")["confirmed"] == 1
    assert chain.escrow.functions.paused().call() is False
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is True
    assert AuditLog.objects.filter(action="set_platform_flag", actor_label="system:actions").count() == 1
    assert verify_audit_chain().ok


def test_resume_whose_unpause_was_replaced_turns_trades_on_when_the_replacement_is_confirmed(chain, alice, bob,
                                                                                            trades_flag, monkeypatch):
    actions.emergency_stop(actor=alice, reason="exploit suspected", chains=["bsc"])
    [requested] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"])
    real_broadcast = transactions.broadcast

    def dead(*args, **kwargs):
        raise ProviderUnavailable("every provider failed")

    monkeypatch.setattr(transactions, "broadcast", dead)
    [stuck] = actions.approve_resume(actor=bob, group=requested.group)
    assert stuck.status == ActionStatus.SIGNED
    monkeypatch.setattr(transactions, "broadcast", real_broadcast)
    replacement = actions.replace_contract_action(actor=alice, action=stuck, reason="stuck at a low fee")
    actions.approve_contract_action(actor=bob, action=replacement)
    assert actions.execute_contract_action(actor=bob, action=replacement).status == ActionStatus.SENT
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is False
    actions.advance_contract_actions(chain="bsc")
    statuses = dict(ContractAction.objects.filter(kind="unpause").values_list("pk", "status"))
    assert statuses == {stuck.pk: ActionStatus.REPLACED, replacement.pk: ActionStatus.CONFIRMED}
    assert chain.escrow.functions.paused().call() is False
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is True


# ---------------------------------------------------------------------------- the key stays secret


def test_contract_action_signer_key_never_appears_in_logs(chain, alice, bob, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    key_hex = ANVIL_OWNER_KEY.removeprefix("0x")
    action = approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY})
    calls = []
    real_broadcast = transactions.broadcast

    def down_once(*args, **kwargs):  # the error path logs too
        calls.append(1)
        if len(calls) == 1:
            raise ProviderUnavailable("every provider failed")
        return real_broadcast(*args, **kwargs)

    monkeypatch.setattr(transactions, "broadcast", down_once)
    actions.execute_contract_action(actor=alice, action=action)
    actions.advance_contract_actions()
    actions.advance_contract_actions()
    action.refresh_from_db()
    assert action.status == ActionStatus.CONFIRMED
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert key_hex.lower() not in text.lower()
    audit = "".join(repr(row) for row in AuditLog.objects.values())
    assert key_hex.lower() not in audit.lower()


@pytest.mark.parametrize("bad", ["0x" + "ab" * 31, "0x" + "00" * 32, "not-a-key-" + "f" * 40])
def test_signer_bad_owner_key_error_does_not_contain_it(chain, settings, alice, bad):
    settings.OWNER_KEY = bad
    transactions.reset_signer()
    with pytest.raises(transactions.SignerUnavailable) as exc:
        transactions.signer_address()
    rendered = "".join(traceback.format_exception(exc.value))
    assert bad not in rendered and bad.removeprefix("0x") not in rendered
    with pytest.raises(ValidationError) as exc:
        propose(alice, "set_platform_fee", {"bps": 150})
    assert bad.removeprefix("0x") not in str(exc.value)
    assert Web3.is_address(chain.owner)


def test_contract_action_dropped_transaction_is_sent_again_with_the_same_bytes(chain, alice, bob):
    start, nonce_before = chain.head() + 1, chain.owner_nonce()
    chain.automine(False)
    sent = actions.execute_contract_action(
        actor=alice, action=approved(alice, bob, "set_treasury", {"treasury": NEW_TREASURY}))
    assert sent.status == ActionStatus.SENT
    chain.rpc("anvil_dropTransaction", [sent.tx_hash])
    assert chain.rpc("eth_getTransactionByHash", [sent.tx_hash]) is None
    actions.advance_contract_actions(chain="bsc")  # not mined, not known: re-broadcast the recorded bytes
    assert chain.rpc("eth_getTransactionByHash", [sent.tx_hash]) is not None
    chain.rpc("evm_mine")
    chain.automine(True)
    actions.advance_contract_actions(chain="bsc")
    assert_one_treasury_change(chain, sent, start, nonce_before)


def test_contract_action_is_confirmed_only_at_the_chains_confirmation_depth(chain, alice, bob, settings, tmp_path):
    import json

    from chain import rpc

    deeper = tmp_path / "deployment.json"
    deeper.write_text(json.dumps({"bsc": {**chain.data, "confirmations": 2}}))
    settings.CHAIN_DEPLOYMENT_FILE = deeper
    rpc.reset_clients()
    sent = actions.execute_contract_action(
        actor=alice, action=approved(alice, bob, "set_platform_fee", {"bps": 175}))
    mined_in = chain.w3.eth.wait_for_transaction_receipt(sent.tx_hash, timeout=30)["blockNumber"]
    actions.advance_contract_actions(chain="bsc")
    sent.refresh_from_db()
    assert sent.status == ActionStatus.SENT and sent.receipt_block == mined_in
    chain.mine(1)
    actions.advance_contract_actions(chain="bsc")
    sent.refresh_from_db()
    assert sent.status == ActionStatus.SENT  # depth 2 of the 2 + 1 needed
    chain.mine(1)
    actions.advance_contract_actions(chain="bsc")
    sent.refresh_from_db()
    assert sent.status == ActionStatus.CONFIRMED
