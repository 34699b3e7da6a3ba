"""Folding logs into the mirror, without a chain: profiles' first and last activity."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from chain.events import Log
from chain.mirror import TokenBook, apply_logs
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
