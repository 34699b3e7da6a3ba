"""Reads the checks and the metrics share, so that a gauge and its alert agree."""
from __future__ import annotations

from decimal import Decimal

from django.conf import settings

from ops.models import PlatformFlag


def large_order_rule() -> tuple[str, list]:
    """The alert table's large-order rule ("a single order over 5,000 USDT") as a condition on `orders` and its
    parameters: over LARGE_ORDER_USDT, in a USD stablecoin (USD_STABLECOINS), the only tokens whose amount is a
    dollar amount. The check and the /metrics gauge both use it, so they agree."""
    limit = Decimal(str(PlatformFlag.get("LARGE_ORDER_USDT", 5000)))
    return "amount > %s AND upper(token_symbol) = ANY(%s)", [limit, settings.USD_STABLECOINS]
