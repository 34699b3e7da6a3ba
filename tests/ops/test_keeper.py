"""The keeper key signs only the public timeout functions: it can call no owner function, and timeouts fire once."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from web3 import Web3
from web3.exceptions import ContractLogicError

from chain.sync import sync_chain
from ops.actions import services as actions
from ops.actions.timeouts import submit_due_timeouts
from ops.models import ActionStatus, ContractAction, Custody

from .custody_fixtures import *  # noqa: F403 - fixtures
from .test_timeouts import TIMEOUT, wait_past

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


@pytest.mark.parametrize("fn", [
    lambda e: e.functions.pause(), lambda e: e.functions.setTreasury(Web3.to_checksum_address("0x" + "ab" * 20)),
    lambda e: e.functions.setTimeouts(1, 1, 1), lambda e: e.functions.ownerResolveDispute(1, True),
])
def test_keeper_key_cannot_call_an_owner_function(safe_chain, fn):
    # OwnableUnauthorizedAccount(keeper): selector 0x118cdaa7, then the caller's address.
    unauthorized = "0x118cdaa7" + safe_chain.keeper.lower()[2:].rjust(64, "0")
    with pytest.raises(ContractLogicError, match=unauthorized):
        fn(safe_chain.escrow).call({"from": safe_chain.keeper})


def test_keeper_route_is_for_public_functions_only_in_the_database(safe_chain, staff):
    action = actions.propose_contract_action(actor=staff["alice"], chain="bsc", kind="set_platform_fee",
                                             params={"bps": 120}, reason="fee change")
    with pytest.raises(IntegrityError), transaction.atomic():
        ContractAction.objects.filter(pk=action.pk).update(custody=Custody.KEEPER)


def test_keeper_automation_of_an_owner_function_is_refused(safe_chain):
    with pytest.raises((IntegrityError, ValidationError)), transaction.atomic():
        actions.propose_contract_action(actor=None, chain="bsc", kind="set_treasury",
                                        params={"treasury": "0x" + "ab" * 20}, reason="not a rule", automatic=True)


def test_keeper_timeouts_fire_exactly_once_signed_by_the_keeper(safe_chain, staff):
    safe_chain.as_safe(safe_chain.escrow.functions.setTimeouts(TIMEOUT, TIMEOUT, 3600))
    order_id = safe_chain.create_order()
    wait_past(safe_chain, safe_chain.order(order_id)["seller_deadline"])
    sync_chain("bsc")
    first = submit_due_timeouts(kind="auto_expire")
    second = submit_due_timeouts(kind="auto_expire")
    assert first["submitted"] == 1 and second["submitted"] == 0
    [action] = ContractAction.objects.filter(kind="auto_expire", order_onchain_id=order_id)
    assert action.custody == Custody.KEEPER and action.status in (ActionStatus.SENT, ActionStatus.CONFIRMED)
    tx = safe_chain.w3.eth.get_transaction(action.tx_hash)
    assert tx["from"] == safe_chain.keeper
    assert safe_chain.order(order_id)["status"] == "expired"
    assert len(safe_chain.logs("OrderExpired", 0)) == 1
