"""The actions check on a real anvil: a transaction not mined for too long, order timeouts the keeper left
overdue, and a failed action, each page someone (P2)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.alerts.models import Alert
from chain.models import ChainState, Order
from chain.sync import sync_chain
from ops.actions import advance
from ops.actions import services as actions
from ops.models import ActionStatus, ContractAction
from ops.monitoring.checks import actions as action_checks

from .test_contract_actions import approved

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


def alert(key: str) -> Alert:
    return Alert.objects.get(key=key, acknowledged_at__isnull=True)


def test_a_transaction_not_mined_for_too_long_is_reported_stuck(chain, alice, bob, settings):
    settings.ACTION_STUCK_SECONDS = 600
    chain.automine(False)
    sent = actions.execute_contract_action(actor=alice, action=approved(alice, bob, "set_platform_fee", {"bps": 150}))
    assert sent.status == ActionStatus.SENT
    assert "actions-stuck:bsc" not in action_checks.check_contract_actions(), "just sent"
    ContractAction.objects.filter(pk=sent.pk).update(sent_at=timezone.now() - timedelta(minutes=11))
    assert "actions-stuck:bsc" in action_checks.check_contract_actions()
    found = alert("actions-stuck:bsc")
    assert found.severity == "P2" and f"#{sent.pk}" in found.message and "Replace stuck tx" in found.message


def test_orders_left_past_their_deadline_are_reported_and_inhibited_while_the_escrow_is_paused(chain, settings):
    settings.TIMEOUT_OVERDUE_SECONDS = 3600
    order_id = chain.create_order()
    sync_chain("bsc")
    assert "timeouts-overdue:bsc" not in action_checks.check_contract_actions()
    # The keeper never came (a stopped worker): the mirrored deadline is three hours gone.
    Order.objects.filter(chain="bsc", onchain_id=order_id).update(seller_deadline=timezone.now() - timedelta(hours=3))
    assert "timeouts-overdue:bsc" in action_checks.check_contract_actions()
    found = alert("timeouts-overdue:bsc")
    assert "1 funded order(s) past the seller deadline" in found.message and found.inhibited == ""
    ChainState.objects.update_or_create(chain="bsc", defaults={"paused": True})
    action_checks.check_contract_actions()
    found.refresh_from_db()
    assert found.inhibited == "bsc is paused: the keeper skips it on purpose", "recorded, not sent: the pause paged"
    ChainState.objects.filter(chain="bsc").update(paused=False)
    Order.objects.filter(chain="bsc", onchain_id=order_id).update(status="completed")
    assert "timeouts-overdue:bsc" not in action_checks.check_contract_actions()
    found.refresh_from_db()
    assert found.resolved_at is not None and found.resolution.startswith("cleared: check_contract_actions")


def test_an_action_that_fails_on_chain_pages_once(chain, alice, bob):
    chain.automine(False)
    sent = actions.execute_contract_action(actor=alice, action=approved(alice, bob, "set_platform_fee", {"bps": 150}))
    chain.rpc("anvil_dropTransaction", [sent.tx_hash])  # its nonce goes to another transaction of the owner
    chain.rpc("eth_sendTransaction",
              [{"from": chain.owner, "to": chain.owner, "value": "0x0", "nonce": hex(sent.nonce)}])
    chain.mine()
    chain.automine(True)
    assert actions.advance_contract_actions(chain="bsc")["failed"] == 1
    found = alert(f"action-failed:bsc:{sent.pk}")
    assert found.severity == "P2" and "changed nothing on chain" in found.message
    assert chain.escrow.functions.platformFeeBps().call() == 100


def test_orders_overdue_after_a_recent_unpause_wait_for_the_keeper(chain, settings):
    settings.TIMEOUT_OVERDUE_SECONDS = 3600
    order_id = chain.create_order()
    chain.send(chain.escrow.functions.pause(), chain.owner)
    chain.send(chain.escrow.functions.unpause(), chain.owner)
    sync_chain("bsc")
    Order.objects.filter(chain="bsc", onchain_id=order_id).update(seller_deadline=timezone.now() - timedelta(hours=3))
    assert "timeouts-overdue:bsc" in action_checks.check_contract_actions()
    assert alert("timeouts-overdue:bsc").inhibited.startswith("bsc was unpaused in the last 1 h"), \
        "unpaused just now: the keeper catches up, nobody is paged"


def test_a_keeper_timeout_that_loses_its_race_pages_nobody(db):
    """Anyone may call the timeout functions; the keeper proposes again by itself."""
    lost = ContractAction(pk=10**6, chain="bsc", kind="auto_expire", is_automatic=True, status=ActionStatus.FAILED,
                          custody="keeper", description="autoExpireOrder(order_id=7)", outcome="reverted")
    advance._alert_failed(lost)
    assert not Alert.objects.filter(key__startswith="action-failed").exists()
    lost.is_automatic, lost.custody = False, "owner_key"  # the same failure of a staff action pages
    advance._alert_failed(lost)
    assert Alert.objects.filter(key=f"action-failed:bsc:{10**6}").exists()
