"""Timeout automation (runbook §5): orders past their deadline get autoExpireOrder / autoReleaseToSeller.

Rule-bound, so no human approval: the system proposes and executes. Exactly once per order, even
with two workers: a partial unique index allows one live automatic action per (chain, kind, order),
and the losing insert is skipped. An order whose on-chain state already moved fails its
simulation and is skipped (recorded as rejected with the reason), and is not proposed again for
TIMEOUT_RETRY_SECONDS; a chain whose escrow is paused is skipped whole (every call would revert). After a pause,
a grace (`grace.py`) holds off the orders whose deadline fell inside it until the grace ends.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection
from django.utils import timezone

from chain import transactions
from chain.config import configured_chains, get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import IN_FLIGHT, ActionStatus

from . import grace
from . import services as actions

logger = logging.getLogger(__name__)

TIMEOUT_KINDS = {
    # kind: (order status, deadline column)
    "auto_expire": ("funded", "seller_deadline"),
    "auto_release": ("delivered", "buyer_deadline"),
}


# The grace rule (a handful of rows, read once per query): held while the grace has not ended, if the deadline lies
# inside the pause. Parameters: now (the window's open end), now (has the grace ended).
_NOT_HELD = ("AND NOT EXISTS (SELECT 1 FROM ops_timeout_graces g WHERE g.chain = o.chain "
             "AND o.{column} >= g.paused_at AND o.{column} <= COALESCE(g.unpaused_at, %s) "
             "AND (g.ends_at IS NULL OR g.ends_at > %s))")


def held_by_grace(kind: str, *, now: datetime | None = None) -> list[tuple[str, str, int, datetime | None]]:
    """(chain, resume group, orders held now, grace end) of each grace that holds orders of this kind: for the
    keeper's log. A range on the same partial index per grace."""
    status, column = TIMEOUT_KINDS[kind]
    now = now or timezone.now()
    with connection.cursor() as cur:
        cur.execute(f"SELECT g.chain, g.\"group\", count(o.onchain_id), g.ends_at FROM ops_timeout_graces g "
                    f"JOIN orders o ON o.status = %s AND o.chain = g.chain AND o.{column} >= g.paused_at "
                    f"AND o.{column} <= COALESCE(g.unpaused_at, %s) AND o.{column} < %s "
                    "WHERE g.ends_at IS NULL OR g.ends_at > %s GROUP BY g.id ORDER BY g.chain",
                    [status, now, now, now])
        return cur.fetchall()


def due_timeouts(kind: str, *, now: datetime | None = None, chains: list[str] | None = None,
                 limit: int = 200) -> list[tuple[str, int]]:
    """(chain, order id) of orders past the deadline with no live automatic action, and none rejected in the
    last TIMEOUT_RETRY_SECONDS, oldest first.

    One index range scan on the partial index of the status (orders_seller_timeout_idx /
    orders_buyer_timeout_idx), whatever the size of the orders table. An order whose deadline fell inside a pause
    [paused_at, unpaused_at] (still paused, or the unpause not yet in the mirror: up to now) is held while that
    pause's grace lasts.
    """
    status, column = TIMEOUT_KINDS[kind]
    now = now or timezone.now()
    # A rejected proposal (its simulation reverted) is retried only after a while, not on every run: until the
    # mirror catches up with the order, or whatever made it revert is gone, each run would only add a row.
    retry_after = now - timedelta(seconds=settings.TIMEOUT_RETRY_SECONDS)
    with connection.cursor() as cur:
        cur.execute(
            f"SELECT o.chain, o.onchain_id FROM orders o WHERE o.status = %s AND o.{column} < %s "
            "AND o.chain = ANY(%s) AND NOT EXISTS (SELECT 1 FROM ops_contract_actions a WHERE a.is_automatic "
            "AND a.kind = %s AND a.chain = o.chain AND a.order_onchain_id = o.onchain_id "
            "AND (a.status NOT IN ('rejected', 'failed') OR (a.status = 'rejected' AND a.proposed_at > %s))) "
            f"{_NOT_HELD.format(column=column)} ORDER BY o.{column} LIMIT %s",
            [status, now, chains if chains is not None else list(settings.CHAINS), kind, retry_after, now, now, limit])
        return cur.fetchall()


def _unpaused(chains: list[str]) -> list[str]:
    """The chains whose escrow is not paused (one paused() read each): while it is paused every timeout
    call reverts, so proposing one would only record a rejected action per due order, run after run."""
    live = []
    for chain in chains:
        try:
            paused = transactions.escrow_paused(chain, get_chain_config(chain).escrow)
        except (ProviderUnavailable, RpcError) as exc:
            logger.warning("timeouts on %s skipped: paused() unreadable: %s", chain, exc, extra={"chain": chain})
            continue
        if paused:
            logger.info("timeouts on %s skipped: the escrow is paused", chain, extra={"chain": chain})
            continue
        live.append(chain)
    return live


def submit_due_timeouts(*, kind: str, limit: int = 50) -> dict[str, int]:
    """Propose and execute the due automatic actions of one kind. Safe to run on two workers at once."""
    counts = {"submitted": 0, "skipped": 0, "duplicate": 0, "held": 0}
    chains = _unpaused(configured_chains())
    if not chains:
        return counts
    grace.settle_timeout_graces()
    for chain, group, held, ends_at in held_by_grace(kind):
        if chain in chains and held:
            counts["held"] += held
            logger.info("timeouts on %s: %s order(s) past their %s deadline held by the grace of %s until %s",
                        chain, held, "seller" if kind == "auto_expire" else "buyer", group,
                        ends_at.isoformat() if ends_at else "the unpause is seen", extra={"chain": chain})
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
