"""Small builders of real rows for tests."""
from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from chain.models import Arbitrator, Order, OrderStatus, UserProfile

_counter = itertools.count(1)


def wallet(n: int | None = None) -> str:
    return "0x%040x" % (n if n is not None else next(_counter) * 7919)


def tx_hash(n: int | None = None) -> str:
    return "0x%064x" % (n if n is not None else next(_counter) * 104729)


def profile(address: str | None = None, **fields) -> UserProfile:
    return UserProfile.objects.create(wallet=address or wallet(), **fields)


def order(*, buyer: UserProfile | None = None, seller: UserProfile | None = None, chain: str = "bsc",
          status: str = OrderStatus.COMPLETED, amount: str | Decimal = "100", created_at: datetime | None = None,
          updated_at: datetime | None = None, **fields) -> Order:
    created_at = created_at or datetime.now(timezone.utc) - timedelta(hours=1)
    n = next(_counter)
    return Order.objects.create(
        chain=chain, onchain_id=fields.pop("onchain_id", n), buyer=buyer or profile(), seller=seller or profile(),
        token_address=fields.pop("token_address", wallet(0xABC)), token_symbol=fields.pop("token_symbol", "USDT"),
        amount=Decimal(amount), platform_fee=fields.pop("platform_fee", Decimal(amount) / 100), status=status,
        created_at=created_at, updated_at=updated_at or created_at,
        created_tx_hash=fields.pop("created_tx_hash", tx_hash()), last_tx_hash=fields.pop("last_tx_hash", tx_hash()),
        **fields)


def arbitrator(*, chain: str = "bsc", address: str | None = None, **fields) -> Arbitrator:
    return Arbitrator.objects.create(chain=chain, wallet=address or wallet(), **fields)
