"""The daily order rollup: recount whole (chain, day) slices from the orders table, on an index range."""
from __future__ import annotations

from datetime import date
from typing import Iterable

from django.db import connection

_COUNT = """
INSERT INTO chain_daily_order_stats (chain, token_symbol, day, orders, funded, delivered, completed, auto_released,
    disputed, resolved_buyer, resolved_seller, cancelled, expired, volume, completed_volume, completed_fees)
SELECT chain, token_symbol, (created_at AT TIME ZONE 'UTC')::date, COUNT(*),
    COUNT(*) FILTER (WHERE status = 'funded'), COUNT(*) FILTER (WHERE status = 'delivered'),
    COUNT(*) FILTER (WHERE status = 'completed'),
    COUNT(*) FILTER (WHERE status = 'completed' AND close_reason = 'auto_released'),
    COUNT(*) FILTER (WHERE status = 'disputed'), COUNT(*) FILTER (WHERE status = 'resolved_buyer'),
    COUNT(*) FILTER (WHERE status = 'resolved_seller'), COUNT(*) FILTER (WHERE status = 'cancelled'),
    COUNT(*) FILTER (WHERE status = 'expired'), COALESCE(SUM(amount), 0),
    COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0),
    COALESCE(SUM(platform_fee) FILTER (WHERE status = 'completed'), 0)
FROM orders WHERE {where}
GROUP BY chain, token_symbol, (created_at AT TIME ZONE 'UTC')::date
"""


def refresh_days(chain: str, days: Iterable[date]) -> None:
    """Recount the given creation days of one chain (call inside the writer's transaction)."""
    days = sorted(set(days))
    if not days:
        return
    with connection.cursor() as cur:
        cur.execute("DELETE FROM chain_daily_order_stats WHERE chain = %s AND day = ANY(%s)", [chain, days])
        # created_at range first (index), then the exact days.
        cur.execute(_COUNT.format(where="chain = %s AND created_at >= %s::date AND created_at < %s::date + 1 "
                                        "AND (created_at AT TIME ZONE 'UTC')::date = ANY(%s)"),
                    [chain, days[0], days[-1], days])


def rebuild_all() -> None:
    """Recount everything (after a bulk load such as seed_demo)."""
    with connection.cursor() as cur:
        cur.execute("TRUNCATE chain_daily_order_stats")
        cur.execute(_COUNT.format(where="TRUE"))
