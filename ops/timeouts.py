"""Timeout automation (runbook §5): orders past their deadline get autoExpireOrder / autoReleaseToSeller.

Rule-bound, so no human approval: the system proposes and executes. Exactly once per order, even
with two workers: a partial unique index allows one live automatic action per (chain, kind, order),
and the losing insert is skipped. An order whose on-chain state already moved fails its
simulation and is skipped (recorded as rejected with the reason).
"""
from __future__ import annotations

import logging
from datetime import datetime

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection
from django.utils import timezone

from chain.config import configured_chains

from . import actions
from .models import IN_FLIGHT, ActionStatus

logger = logging.getLogger(__name__)

TIMEOUT_KINDS = {
    # kind: (order status, deadline column)
    "auto_expire": ("funded", "seller_deadline"),
    "auto_release": ("delivered", "buyer_deadline"),
}


def due_timeouts(kind: str, *, now: datetime | None = None, chains: list[str] | None = None,
                 limit: int = 200) -> list[tuple[str, int]]:
    """(chain, order id) of orders past the deadline with no live automatic action, oldest first.

    One index range scan on the partial index of the status (orders_seller_timeout_idx /
    orders_buyer_timeout_idx), whatever the size of the orders table.
    """
    status, column = TIMEOUT_KINDS[kind]
    now = now or timezone.now()
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT o.chain, o.onchain_id FROM orders o WHERE o.status = %s AND o.{column} < %s "
            "AND o.chain = ANY(%s) AND NOT EXISTS (SELECT 1 FROM ops_contract_actions a WHERE a.is_automatic "
            "AND a.kind = %s AND a.chain = o.chain AND a.order_onchain_id = o.onchain_id "
            "AND a.status NOT IN ('rejected', 'failed')) "
            f"ORDER BY o.{column} LIMIT %s",
            [status, now, chains if chains is not None else list(settings.CHAINS), kind, limit])
        return cur.fetchall()


def submit_due_timeouts(*, kind: str, limit: int = 50) -> dict[str, int]:
    """Propose and execute the due automatic actions of one kind. Safe to run on two workers at once."""
    counts = {"submitted": 0, "skipped": 0, "duplicate": 0}
    chains = configured_chains()
    if not chains:
        return counts
    for chain, order_id in due_timeouts(kind, chains=chains, limit=limit):
        try:
            action = actions.propose_contract_action(
                actor=None, chain=chain, kind=kind, params={"order_id": order_id}, automatic=True,
                reason=f"runbook §5 check-{'seller' if kind == 'auto_expire' else 'buyer'}-timeouts: "
                       f"order #{order_id} is past its deadline")
        except IntegrityError:
            counts["duplicate"] += 1  # another worker got there first
            continue
        except ValidationError as exc:
            logger.warning("timeout action for %s #%s not proposed: %s", chain, order_id, "; ".join(exc.messages))
            counts["skipped"] += 1
            continue
        if action.status == ActionStatus.REJECTED:
            counts["skipped"] += 1  # the simulation reverted: the order already moved on chain
            continue
        result = actions.execute_contract_action(actor=None, action=action)
        counts["submitted" if result.status in IN_FLIGHT else "skipped"] += 1
    return counts
