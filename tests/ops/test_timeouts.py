"""Timeout automation (runbook §5) on a real anvil: due orders get exactly one automatic action, moved ones none.

The contract's timeouts are set to seconds and the test waits for them in real time: anvil stamps
blocks with the wall clock, which is the clock `due_timeouts` compares the mirror's deadlines with.
"""
from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from backoffice.audit.models import AuditLog
from chain.sync import sync_chain
from ops.actions import services as actions
from ops.actions.timeouts import due_timeouts, submit_due_timeouts
from ops.models import ActionStatus, ContractAction

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

TIMEOUT = 2  # seconds, for the seller and the buyer deadline


@pytest.fixture
def short_timeouts(chain):
    chain.send(chain.escrow.functions.setTimeouts(TIMEOUT, TIMEOUT, 3600), chain.owner)
    return chain


def wait_past(chain, deadline: int) -> None:
    """Wait until both the wall clock and the chain's newest block are past `deadline` (anvil stamps
    blocks with the wall clock, but a snapshot revert can leave it a few seconds behind)."""
    give_up = time.monotonic() + 20
    while True:
        chain.mine()
        if chain.now() > deadline and time.time() > deadline + 0.5:
            return
        assert time.monotonic() < give_up, f"chain time {chain.now()} never passed {deadline}"
        time.sleep(0.2)


def live_automatic(kind: str, order_id: int):
    return ContractAction.objects.filter(is_automatic=True, kind=kind, order_onchain_id=order_id).exclude(
        status__in=[ActionStatus.REJECTED, ActionStatus.FAILED])


def test_submit_due_timeouts_twice_at_once_submits_each_order_exactly_once(short_timeouts):
    chain = short_timeouts
    expiring = chain.create_order(amount=300 * 10**18)
    releasing = chain.create_order(amount=400 * 10**18)
    chain.deliver(releasing)
    fresh_deadline = chain.order(releasing)["buyer_deadline"]
    assert sync_chain("bsc").malformed == 0
    wait_past(chain, max(chain.order(expiring)["seller_deadline"], fresh_deadline))
    assert due_timeouts("auto_expire", chains=["bsc"]) == [("bsc", expiring)]
    assert due_timeouts("auto_release", chains=["bsc"]) == [("bsc", releasing)]
    start, nonce_before, owner_nonce = chain.head() + 1, chain.nonce_of(chain.keeper), chain.owner_nonce()

    barrier = threading.Barrier(2)
    results, errors = [], []

    def worker():
        try:
            barrier.wait(timeout=10)
            results.append(("auto_expire", submit_due_timeouts(kind="auto_expire")))
            results.append(("auto_release", submit_due_timeouts(kind="auto_release")))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    for kind in ("auto_expire", "auto_release"):
        assert sum(counts["submitted"] for k, counts in results if k == kind) == 1

    actions.advance_contract_actions(chain="bsc")
    for kind, order_id in (("auto_expire", expiring), ("auto_release", releasing)):
        (action,) = live_automatic(kind, order_id)
        assert action.status == ActionStatus.CONFIRMED, action.outcome
        assert action.proposed_by is None and action.approved_by is None and action.is_automatic
        labels = set(AuditLog.objects.filter(object_id=str(action.pk), action__in=[
            "propose_contract_action", "sign_contract_action"]).values_list("actor_label", flat=True))
        assert labels == {"system:timeouts"}
    assert chain.order(expiring)["status"] == "expired"
    assert chain.order(releasing)["status"] == "completed"
    assert len(chain.logs("OrderExpired", start)) == 1 and len(chain.logs("OrderAutoReleased", start)) == 1
    # The keeper signed both (the owner key none), one transaction each.
    assert chain.nonce_of(chain.keeper) == nonce_before + 2 and len(chain.txs_from(chain.keeper, start)) == 2
    assert chain.owner_nonce() == owner_nonce and not chain.owner_txs(start)

    # Once more, after the fact: nothing is due (the live actions cover the orders), nothing is sent.
    assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 0, "duplicate": 0, "held": 0}
    assert submit_due_timeouts(kind="auto_release") == {"submitted": 0, "skipped": 0, "duplicate": 0, "held": 0}
    assert chain.nonce_of(chain.keeper) == nonce_before + 2


def test_submit_due_timeouts_skips_orders_that_already_moved_on_chain(short_timeouts):
    chain = short_timeouts
    confirmed = chain.create_order(amount=500 * 10**18)
    chain.deliver(confirmed)
    cancelled = chain.create_order(amount=600 * 10**18)
    assert sync_chain("bsc").malformed == 0  # the mirror says: delivered, funded
    chain.send(chain.escrow.functions.confirmReceipt(confirmed), chain.buyer)  # not synced
    chain.send(chain.escrow.functions.cancelOrder(cancelled), chain.seller)  # not synced
    wait_past(chain, max(chain.order(confirmed)["buyer_deadline"], chain.order(cancelled)["seller_deadline"]))
    nonce_before = chain.nonce_of(chain.keeper, "pending")

    assert submit_due_timeouts(kind="auto_release") == {"submitted": 0, "skipped": 1, "duplicate": 0, "held": 0}
    assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 1, "duplicate": 0, "held": 0}

    for kind, order_id, current in (("auto_release", confirmed, 3), ("auto_expire", cancelled, 7)):
        (action,) = ContractAction.objects.filter(kind=kind, order_onchain_id=order_id)
        assert action.status == ActionStatus.REJECTED and action.nonce is None and not action.raw_tx
        assert f"InvalidStatus({current})" in action.outcome
    assert chain.nonce_of(chain.keeper, "pending") == nonce_before
    assert chain.order(confirmed)["status"] == "completed" and chain.order(cancelled)["status"] == "cancelled"


def test_submit_due_timeouts_skips_a_chain_whose_escrow_is_paused(short_timeouts, monkeypatch):
    from chain import transactions

    chain = short_timeouts
    order = chain.create_order(amount=300 * 10**18)
    assert sync_chain("bsc").malformed == 0
    wait_past(chain, chain.order(order)["seller_deadline"])
    chain.send(chain.escrow.functions.pause(), chain.owner)
    real_simulate, simulated = transactions.simulate, []

    def counting_simulate(*args, **kwargs):
        simulated.append(kwargs.get("data"))
        return real_simulate(*args, **kwargs)

    monkeypatch.setattr(transactions, "simulate", counting_simulate)
    for _ in range(3):
        assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 0, "duplicate": 0, "held": 0}
    assert not ContractAction.objects.exists() and not simulated
    assert not AuditLog.objects.filter(action="propose_contract_action").exists()

    chain.send(chain.escrow.functions.unpause(), chain.owner)
    assert submit_due_timeouts(kind="auto_expire") == {"submitted": 1, "skipped": 0, "duplicate": 0, "held": 0}
    assert live_automatic("auto_expire", order).count() == 1


def test_submit_due_timeouts_proposes_a_rejected_order_again_only_after_the_retry_delay(short_timeouts, settings):
    chain = short_timeouts
    settings.TIMEOUT_RETRY_SECONDS = 3600
    cancelled = chain.create_order(amount=600 * 10**18)
    assert sync_chain("bsc").malformed == 0  # the mirror says funded
    chain.send(chain.escrow.functions.cancelOrder(cancelled), chain.seller)  # not synced
    wait_past(chain, chain.order(cancelled)["seller_deadline"])

    assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 1, "duplicate": 0, "held": 0}
    for _ in range(2):
        assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 0, "duplicate": 0, "held": 0}
    (rejected,) = ContractAction.objects.filter(kind="auto_expire", order_onchain_id=cancelled)
    assert rejected.status == ActionStatus.REJECTED
    assert AuditLog.objects.filter(action="propose_contract_action").count() == 1

    settings.TIMEOUT_RETRY_SECONDS = 0  # the delay is over
    assert submit_due_timeouts(kind="auto_expire") == {"submitted": 0, "skipped": 1, "duplicate": 0, "held": 0}
    assert ContractAction.objects.filter(kind="auto_expire", order_onchain_id=cancelled).count() == 2
