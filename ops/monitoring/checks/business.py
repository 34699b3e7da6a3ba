"""Business checks: large orders, secret rotations due, and the nightly user tiers."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from ops.models import SecretSchedule

from ..selectors import large_order_rule

logger = logging.getLogger(__name__)


def check_large_orders(window: timedelta = timedelta(hours=1)) -> int:
    """Alert table: a single order over 5,000 USDT (P3, information), once per order; in a USD stablecoin
    (USD_STABLECOINS), the only tokens whose amount is a dollar amount."""
    rule, params = large_order_rule()
    limit = params[0]
    with connection.cursor() as cur:
        cur.execute(f"SELECT chain, onchain_id, amount, token_symbol FROM orders WHERE created_at > %s AND {rule} "
                    "ORDER BY created_at LIMIT 100", [timezone.now() - window, *params])
        rows = cur.fetchall()
    for chain, onchain_id, amount, symbol in rows:
        raise_alert(key=f"large-order:{chain}:{onchain_id}", severity="P3", source="check_large_orders",
                    title=f"Large order {chain} #{onchain_id}: {amount.normalize():f} {symbol}",
                    message=f"Over the {limit} threshold.")
    return len(rows)


def check_secret_rotations() -> list[str]:
    raised = []
    for secret in SecretSchedule.objects.all():
        state = secret.state
        if state == "overdue":
            raise_alert(key=f"secret-overdue:{secret.name}", severity="P2", source="check_secret_rotations",
                        title=f"Secret rotation overdue: {secret.name}",
                        message=f"Due {secret.next_due:%Y-%m-%d}; procedure {secret.procedure}.")
            raised.append(f"secret-overdue:{secret.name}")
        elif state == "due":
            raise_alert(key=f"secret-due:{secret.name}", severity="P3", source="check_secret_rotations",
                        title=f"Secret rotation due soon: {secret.name}",
                        message=f"Due {secret.next_due:%Y-%m-%d}; procedure {secret.procedure}.")
            raised.append(f"secret-due:{secret.name}")
    # A rotation recorded (or a retimed schedule) clears them.
    settle_alerts(source="check_secret_rotations", scope=["secret-overdue", "secret-due"], raised=raised)
    return [key.split(":", 1)[1] for key in raised]


def recalculate_user_tiers() -> int:
    """Runbook §5 update-user-tiers (daily 03:00 UTC): tier from 90 days of completed volume and disputes.

    gold: ≥ 50 completed and ≥ 10,000 volume and no lost dispute; silver: ≥ 10 completed;
    bronze: ≥ 1 completed; new otherwise. One statement; only changed rows are written.
    """
    with connection.cursor() as cur:
        cur.execute("""
            WITH activity AS (
                SELECT wallet, SUM(done) AS done, SUM(volume) AS volume, SUM(lost) AS lost FROM (
                    SELECT seller_wallet AS wallet, COUNT(*) FILTER (WHERE status = 'completed') AS done,
                           COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume,
                           COUNT(*) FILTER (WHERE status = 'resolved_buyer') AS lost
                    FROM orders WHERE created_at > NOW() - INTERVAL '90 days' GROUP BY seller_wallet
                    UNION ALL
                    SELECT buyer_wallet, COUNT(*) FILTER (WHERE status = 'completed'),
                           COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0),
                           COUNT(*) FILTER (WHERE status = 'resolved_seller')
                    FROM orders WHERE created_at > NOW() - INTERVAL '90 days' GROUP BY buyer_wallet) t
                GROUP BY wallet),
            tiers AS (
                SELECT p.wallet, CASE
                    WHEN a.done >= 50 AND a.volume >= 10000 AND a.lost = 0 THEN 'gold'
                    WHEN a.done >= 10 THEN 'silver'
                    WHEN a.done >= 1 THEN 'bronze'
                    ELSE 'new' END AS tier
                FROM user_profiles p LEFT JOIN activity a ON a.wallet = p.wallet)
            UPDATE user_profiles p SET tier = t.tier FROM tiers t
            WHERE p.wallet = t.wallet AND p.tier IS DISTINCT FROM t.tier""")
        return cur.rowcount
