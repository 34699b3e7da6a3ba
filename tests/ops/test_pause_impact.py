"""Pause impact and the grace after a pause (issue 24, item 4) on a real anvil, read back through the sync's mirror.

The market is built for the figures: each order's deadline is placed inside or outside the window by setting the
escrow's timeouts before it is created (they apply to deadlines set afterwards).
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal

import pytest

from backoffice.audit.models import AuditLog
from chain.sync import sync_chain
from ops.actions import impact
from ops.actions import services as actions
from ops.actions.timeouts import due_timeouts, submit_due_timeouts
from ops.models import ActionStatus, ContractAction, TimeoutGrace

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

HOUR = 3600


def set_timeouts(chain, seller: int, buyer: int, dispute: int) -> None:
    chain.send(chain.escrow.functions.setTimeouts(seller, buyer, dispute), chain.owner)


def wait_past(chain, deadline: int) -> None:
    """Until both the chain's newest block and the wall clock are past `deadline` (the keeper compares the
    mirror's deadlines with the wall clock)."""
    give_up = time.monotonic() + 20
    while not (chain.now() > deadline and time.time() > deadline + 0.5):
        assert time.monotonic() < give_up, f"chain time {chain.now()} never passed {deadline}"
        time.sleep(0.2)
        chain.mine()


def test_pause_impact_counts_the_open_orders_the_value_and_the_deadlines_inside_the_pause(chain):
    # Inside a 2-hour pause: one seller deadline (1 h), one buyer deadline (1 h), one dispute deadline (1 h).
    set_timeouts(chain, HOUR, HOUR, HOUR)
    seller_soon = chain.create_order(amount=100 * 10**18)
    buyer_soon = chain.create_order(amount=200 * 10**18)
    chain.deliver(buyer_soon)
    dispute_soon = chain.create_order(amount=300 * 10**6, symbol="USDC")
    chain.dispute(dispute_soon)
    # Outside it: every deadline 10 hours away; one order completed (not open, nothing escrowed).
    set_timeouts(chain, 10 * HOUR, 10 * HOUR, 10 * HOUR)
    chain.create_order(amount=400 * 10**18)
    late_delivered = chain.create_order(amount=500 * 10**18)
    chain.deliver(late_delivered)
    late_dispute = chain.create_order(amount=600 * 10**6, symbol="USDC")
    chain.dispute(late_dispute)
    done = chain.create_order(amount=700 * 10**18)
    chain.deliver(done)
    chain.send(chain.escrow.functions.confirmReceipt(done), chain.buyer)
    assert sync_chain("bsc").malformed == 0

    two_hours = impact.pause_impact("bsc", hours=2)
    assert two_hours.open_by_status == {"funded": 2, "delivered": 2, "disputed": 2}
    escrowed = {t["symbol"]: (t["orders"], t["amount"]) for t in two_hours.escrowed}
    assert escrowed == {"USDT": (4, Decimal(1200)), "USDC": (2, Decimal(900))}
    assert (two_hours.seller_due, two_hours.seller_sample) == (1, [seller_soon])
    assert (two_hours.buyer_due, two_hours.buyer_sample) == (1, [buyer_soon])
    assert (two_hours.disputes_due, two_hours.disputes_sample) == (1, [dispute_soon])

    whole_day = impact.pause_impact("bsc", hours=24)
    assert (whole_day.seller_due, whole_day.buyer_due, whole_day.disputes_due) == (2, 2, 2)
    assert whole_day.open_by_status == two_hours.open_by_status


def test_pause_impact_is_on_the_emergency_stop_page_and_on_a_proposed_pause(chain, alice, client):
    set_timeouts(chain, HOUR, HOUR, HOUR)
    order_id = chain.create_order(amount=100 * 10**18)
    assert sync_chain("bsc").malformed == 0
    client.force_login(alice)
    page = client.get("/admin/ops/contractaction/emergency-stop/?hours=2").content.decode()
    assert "Pause impact on bsc — a pause of the next 2 hours" in page
    assert f"#{order_id}" in page
    pause = actions.propose_contract_action(actor=alice, chain="bsc", kind="pause", params={}, reason="drill")
    page = client.get(f"/admin/ops/contractaction/{pause.pk}/change/").content.decode()
    assert "Pause impact on bsc" in page and f"#{order_id}" in page


def test_grace_after_a_pause_keeps_the_keeper_off_exactly_the_orders_whose_deadline_fell_inside_it(
        chain, alice, bob, trades_flag, caplog):
    set_timeouts(chain, 2, 2, HOUR)
    before = chain.create_order(amount=100 * 10**18)  # its deadline passes before the pause: its parties could act
    wait_past(chain, chain.order(before)["seller_deadline"])
    set_timeouts(chain, 3, 3, HOUR)
    inside = chain.create_order(amount=200 * 10**18)  # its deadline passes while paused
    actions.emergency_stop(actor=alice, reason="drill", chains=["bsc"])
    assert chain.escrow.functions.paused().call() is True
    wait_past(chain, chain.order(inside)["seller_deadline"])
    assert sync_chain("bsc").malformed == 0

    release = impact.unpause_release("bsc")
    assert (release.expire, release.expire_sample, release.release) == (1, [inside], 0)
    [unpause] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"], grace_seconds=HOUR)
    grace = TimeoutGrace.objects.get(chain="bsc")
    assert (grace.group, grace.grace_seconds, grace.orders_at_request, grace.ends_at) == (unpause.group, HOUR, 1,
                                                                                          None)
    assert AuditLog.objects.filter(action="request_timeout_grace", object_id=str(grace.pk),
                                   actor_label="alice").exists()
    # Still waiting for the unpause: everything whose deadline passed since the pause is held.
    assert due_timeouts("auto_expire", chains=["bsc"]) == [("bsc", before)]

    actions.approve_resume(actor=bob, group=unpause.group)
    assert chain.escrow.functions.paused().call() is False
    after = chain.create_order(amount=300 * 10**18)  # its deadline passes after the unpause: not held
    wait_past(chain, chain.order(after)["seller_deadline"])
    assert sync_chain("bsc").malformed == 0

    with caplog.at_level(logging.INFO, logger="ops.actions.timeouts"):
        counts = submit_due_timeouts(kind="auto_expire")
    assert (counts["submitted"], counts["held"]) == (2, 1)
    assert f"1 order(s) past their seller deadline held by the grace of {unpause.group}" in caplog.text
    grace.refresh_from_db()
    unpaused = chain.w3.eth.get_block(chain.logs("Unpaused", 0)[-1]["blockNumber"])["timestamp"]
    assert int(grace.unpaused_at.timestamp()) == unpaused
    assert grace.ends_at == grace.unpaused_at + timedelta(hours=1)
    assert AuditLog.objects.filter(action="settle_timeout_grace", object_id=str(grace.pk)).exists()
    sent = set(ContractAction.objects.filter(kind="auto_expire", status=ActionStatus.SENT)
               .values_list("order_onchain_id", flat=True))
    assert sent == {before, after}
    assert chain.order(inside)["status"] == "funded"

    # Once the grace ends, the held order is the keeper's again.
    assert due_timeouts("auto_expire", chains=["bsc"], now=grace.ends_at + timedelta(seconds=1)) == [("bsc", inside)]


def test_resume_without_grace_holds_nothing(chain, alice, bob, trades_flag):
    set_timeouts(chain, 3, 3, HOUR)
    inside = chain.create_order(amount=200 * 10**18)
    actions.emergency_stop(actor=alice, reason="drill", chains=["bsc"])
    wait_past(chain, chain.order(inside)["seller_deadline"])
    assert sync_chain("bsc").malformed == 0
    [unpause] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"], grace_seconds=0)
    assert not TimeoutGrace.objects.exists()
    actions.approve_resume(actor=bob, group=unpause.group)
    assert due_timeouts("auto_expire", chains=["bsc"]) == [("bsc", inside)]


def test_resume_and_unpause_pages_show_what_it_releases_and_the_grace_holds_buyer_deadlines_too(
        chain, alice, bob, trades_flag, client):
    set_timeouts(chain, 3, 3, HOUR)
    expiring = chain.create_order(amount=200 * 10**18)
    releasing = chain.create_order(amount=300 * 10**18)
    chain.deliver(releasing)
    actions.emergency_stop(actor=alice, reason="drill", chains=["bsc"])
    wait_past(chain, max(chain.order(expiring)["seller_deadline"], chain.order(releasing)["buyer_deadline"]))
    assert sync_chain("bsc").malformed == 0

    client.force_login(alice)
    page = client.get("/admin/ops/contractaction/resume/").content.decode()
    assert "What the unpause of bsc releases" in page
    assert f"(seller deadline passed while paused)</th><td>1: #{expiring}<" in page
    assert f"(buyer deadline passed while paused)</th><td>1: #{releasing}<" in page
    assert "USDT (2)" in page
    [unpause] = actions.request_resume(actor=alice, reason="fixed", chains=["bsc"], grace_seconds=HOUR)
    page = client.get(f"/admin/ops/contractaction/{unpause.pk}/change/").content.decode()
    assert f"#{releasing}" in page and "Grace after the pause" in page and unpause.group in page

    actions.approve_resume(actor=bob, group=unpause.group)
    assert chain.escrow.functions.paused().call() is False
    assert sync_chain("bsc").malformed == 0
    assert submit_due_timeouts(kind="auto_release")["held"] == 1
    assert submit_due_timeouts(kind="auto_expire")["held"] == 1
    assert not ContractAction.objects.filter(kind__in=["auto_expire", "auto_release"]).exists()
    assert (chain.order(expiring)["status"], chain.order(releasing)["status"]) == ("funded", "delivered")
