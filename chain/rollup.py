"""The order rollups: daily counts (recounted per (chain, day) slice on an index range) and the top sellers."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Iterable

from django.db import connection, transaction
from django.utils import timezone

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


TOP_SELLERS_LIMIT = 10
TOP_SELLERS_DAYS = 30

_TOP_SELLERS = """
INSERT INTO chain_top_sellers (rank, seller_wallet, display_name, rating, orders, total_volume, window_start,
    computed_at)
SELECT row_number() OVER (ORDER BY t.total_volume DESC, t.seller_wallet), t.seller_wallet,
    COALESCE(u.display_name, ''), u.rating, t.orders, t.total_volume, %(start)s, %(now)s
FROM (SELECT seller_wallet, COUNT(*) AS orders, SUM(amount) AS total_volume FROM orders
      WHERE status = 'completed' AND created_at > %(start)s
      GROUP BY seller_wallet ORDER BY total_volume DESC, seller_wallet LIMIT %(limit)s) t
LEFT JOIN user_profiles u ON u.wallet = t.seller_wallet
"""


def refresh_top_sellers(*, now: datetime | None = None, limit: int = TOP_SELLERS_LIMIT) -> int:
    """Replace the top-sellers snapshot (runbook §9's query) in one transaction; readers see the old one meanwhile.

    One pass over the window's completed orders (about a second at a million orders): run by beat, never
    on a page view. Returns the number of sellers stored.
    """
    now = now or timezone.now()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM chain_top_sellers")
        cur.execute(_TOP_SELLERS, {"start": now - timedelta(days=TOP_SELLERS_DAYS), "now": now, "limit": limit})
        return cur.rowcount
