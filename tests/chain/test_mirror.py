"""Folding logs into the mirror, without a chain: profiles' first and last activity."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from chain.events import Log
from chain.fold import apply_logs
from chain.mirror import TokenBook
from chain.models import UserProfile

pytestmark = pytest.mark.django_db

TOKEN = "0x" + "cf" * 20
BUYER, SELLER, OTHER = "0x" + "0b" * 20, "0x" + "5e" * 20, "0x" + "07" * 20


def created(order_id: int, block: int, at: int, buyer: str, seller: str) -> Log:
    return Log(block, "0x" + f"{block:064x}", at, "0x" + f"{order_id:064x}", 0, "0x" + "e5" * 20, "escrow",
               "OrderCreated", {"orderId": order_id, "buyer": buyer, "seller": seller, "token": TOKEN,
                                "amount": 10**18, "platformFee": 10**16, "sellerDeadline": at + 86400})


def test_apply_logs_keeps_first_seen_and_latest_activity_of_each_wallet_in_one_batch():
    tokens = TokenBook({TOKEN: ("USDT", 18)})
    apply_logs("bsc", [created(1, 10, 1_800_000_000, BUYER, SELLER), created(2, 20, 1_800_000_100, BUYER, OTHER)],
               tokens)
    buyer = UserProfile.objects.get(wallet=BUYER)
    assert buyer.created_at == datetime.fromtimestamp(1_800_000_000, tz=timezone.utc)
    assert buyer.first_seen_block == 10
    assert buyer.last_active_at == datetime.fromtimestamp(1_800_000_100, tz=timezone.utc)


def test_apply_logs_gives_the_same_profiles_in_one_batch_or_two():
    tokens = TokenBook({TOKEN: ("USDT", 18)})
    logs = [created(1, 10, 1_800_000_000, BUYER, SELLER), created(2, 20, 1_800_000_100, BUYER, OTHER)]
    apply_logs("bsc", logs[:1], tokens)
    apply_logs("bsc", logs[1:], tokens)
    two = {p.wallet: (p.created_at, p.last_active_at, p.first_seen_block) for p in UserProfile.objects.all()}
    assert two[BUYER] == (datetime.fromtimestamp(1_800_000_000, tz=timezone.utc),
                          datetime.fromtimestamp(1_800_000_100, tz=timezone.utc), 10)


def _state(**over) -> dict:
    from decimal import Decimal

    when = datetime(2026, 11, 26, 12, 30, tzinfo=timezone.utc)
    state = {
        "chain": "bsc", "onchain_id": 7, "buyer_wallet": "0x" + "a" * 40, "seller_wallet": "0x" + "b" * 40,
        "arbitrator_wallet": None, "token_address": "0x" + "c" * 40, "token_symbol": "USDT",
        "amount": Decimal("12.500000"), "platform_fee": Decimal("0.1"), "status": "funded", "close_reason": None,
        "created_at": when, "updated_at": when, "delivered_at": None, "disputed_at": None, "closed_at": None,
        "seller_deadline": when, "buyer_deadline": None, "dispute_deadline": None, "disputed_by": None,
        "evidence_cids": [], "created_tx_hash": "0x" + "d" * 64, "last_tx_hash": "0x" + "e" * 64,
        "created_block": 100, "last_block": 101,
    }
    state.update(over)
    return state


@pytest.mark.parametrize("over", [
    {},
    {"token_symbol": "U\tS\\D\nT", "evidence_cids": ['ba"fy', "back\\slash", "invalid:tab\there"]},
    {"created_block": None, "last_block": None, "arbitrator_wallet": "0x" + "f" * 40, "close_reason": "confirmed",
     "amount": __import__("decimal").Decimal("1E+3")},
])
def test_order_line_is_the_generic_copy_text_of_the_state(over):
    from chain.mirror import ORDER_COLUMNS, _text, order_line

    state = _state(**over)
    assert order_line(state) == "\t".join(_text(state[c]) for c in ORDER_COLUMNS)
    assert order_line(state).count("\t") == len(ORDER_COLUMNS) - 1  # no unescaped tab inside a value


@pytest.mark.django_db(transaction=True)
def test_escaped_order_text_round_trips_through_copy():
    from chain.mirror import load_orders, order_line, write_order_lines
    from tests import factories as f

    buyer, seller = f.profile(), f.profile()
    state = _state(buyer_wallet=buyer.wallet, seller_wallet=seller.wallet, token_symbol="U\tS\\D",
                   evidence_cids=['ba"fy', "back\\slash"])
    write_order_lines([order_line(state)], [])
    stored = load_orders("bsc", [7])[7]
    assert stored["token_symbol"] == "U\tS\\D" and stored["evidence_cids"] == ['ba"fy', "back\\slash"]
    assert stored["amount"] == state["amount"] and stored["created_at"] == state["created_at"]


def test_sync_pauses_only_the_cyclic_collector_and_restores_it():
    import gc

    from chain.sync import cyclic_gc_paused

    assert gc.isenabled()
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        assert not gc.isenabled()
        raise RuntimeError("a failing batch")
    assert gc.isenabled()
