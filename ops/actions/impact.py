"""What a pause holds and what an unpause releases (issue 24, item 4): reads over the `orders` mirror.

Every query runs on the partial indexes the dispute queue and the timeout keeper already use (status = 'funded' /
'delivered' / 'disputed'), so it reads the open orders only, however many closed ones the table holds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from ops.models import ActionStatus, ContractAction, TimeoutGrace

SAMPLE = 20  # order ids listed per group; the counts are always complete


@dataclass
class PauseImpact:
    chain: str
    hours: int
    open_by_status: dict[str, int] = field(default_factory=dict)
    escrowed: list[dict[str, Any]] = field(default_factory=list)  # per token: address, symbol, orders, amount
    disputes_due: int = 0  # disputes whose arbitrator deadline passes inside the pause
    disputes_sample: list[int] = field(default_factory=list)
    seller_due: int = 0  # funded orders whose seller deadline passes inside the pause
    seller_sample: list[int] = field(default_factory=list)
    buyer_due: int = 0  # delivered orders whose buyer deadline passes inside the pause
    buyer_sample: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "escrowed": [{**t, "amount": str(t["amount"])} for t in self.escrowed]}


@dataclass
class UnpauseRelease:
    chain: str
    paused_at: datetime | None
    until: datetime
    expire: int = 0  # funded orders whose seller deadline passed while paused: auto-expired at once
    expire_sample: list[int] = field(default_factory=list)
    release: int = 0  # delivered orders whose buyer deadline passed while paused: auto-released at once
    release_sample: list[int] = field(default_factory=list)
    value: list[dict[str, Any]] = field(default_factory=list)  # per token, both kinds together

    @property
    def total(self) -> int:
        return self.expire + self.release

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "paused_at": self.paused_at and self.paused_at.isoformat(),
                "until": self.until.isoformat(), "value": [{**t, "amount": str(t["amount"])} for t in self.value]}


def _due(cur, chain: str, status: str, column: str, start: datetime, end: datetime) -> tuple[int, list[int]]:
    """Count and first ids of `status` orders whose `column` falls in [start, end]: a range on its partial index."""
    cur.execute(f"SELECT count(*), (array_agg(onchain_id ORDER BY {column}))[1:%s] FROM orders "
                f"WHERE status = %s AND {column} BETWEEN %s AND %s AND chain = %s",
                [SAMPLE, status, start, end, chain])
    count, sample = cur.fetchone()
    return count, list(sample or [])


def pause_impact(chain: str, *, hours: int = 24, now: datetime | None = None) -> PauseImpact:
    """A pause starting now and lasting `hours`: the open orders per state, the value escrowed per token, and
    the orders whose deadlines pass while nobody can act (disputes: the arbitrator cannot resolve; funded and
    delivered orders: the seller cannot deliver, the buyer cannot confirm or dispute)."""
    now = now or timezone.now()
    end = now + timedelta(hours=hours)
    impact = PauseImpact(chain=chain, hours=hours)
    with connection.cursor() as cur:
        # One pass over the open orders (the three partial indexes' rows), grouped both ways at once.
        cur.execute("SELECT status, token_address, max(token_symbol), count(*), COALESCE(sum(amount), 0) FROM orders "
                    "WHERE status IN ('funded', 'delivered', 'disputed') AND chain = %s "
                    "GROUP BY GROUPING SETS ((status), (token_address))", [chain])
        tokens = []
        for status, token, symbol, count, amount in cur.fetchall():
            if status is not None:
                impact.open_by_status[status] = count
            else:
                tokens.append({"token": token, "symbol": symbol, "orders": count, "amount": Decimal(amount)})
        impact.open_by_status = {s: impact.open_by_status.get(s, 0) for s in ("funded", "delivered", "disputed")}
        impact.escrowed = sorted(tokens, key=lambda t: (t["symbol"], t["token"]))
        impact.disputes_due, impact.disputes_sample = _due(cur, chain, "disputed", "dispute_deadline", now, end)
        impact.seller_due, impact.seller_sample = _due(cur, chain, "funded", "seller_deadline", now, end)
        impact.buyer_due, impact.buyer_sample = _due(cur, chain, "delivered", "buyer_deadline", now, end)
    return impact


def paused_since(chain: str) -> datetime | None:
    """When the current pause began: the block time of the escrow's last Paused event in the mirror (on its owner-
    events index), else when the back office's last pause was sent (the mirror may not have synced it yet)."""
    with connection.cursor() as cur:
        cur.execute("SELECT max(block_time) FROM chain_events WHERE chain = %s AND event = 'Paused' "
                    "AND contract = 'escrow' AND order_id IS NULL AND wallet IS NULL", [chain])
        (mirrored,) = cur.fetchone()
    if mirrored is not None:
        return mirrored
    sent = (ContractAction.objects.filter(chain=chain, kind="pause", sent_at__isnull=False)
            .exclude(status__in=[ActionStatus.FAILED, ActionStatus.REPLACED]).order_by("-sent_at")
            .values_list("sent_at", flat=True).first())
    return sent


def unpause_release(chain: str, *, paused_at: datetime | None = None, now: datetime | None = None) -> UnpauseRelease:
    """The orders whose seller or buyer deadline passed during the pause (from `paused_at`, by default
    `paused_since`, to now): the timeout keeper would expire or release them as soon as the escrow is unpaused,
    although their parties could not act."""
    now = now or timezone.now()
    paused_at = paused_at if paused_at is not None else paused_since(chain)
    release = UnpauseRelease(chain=chain, paused_at=paused_at, until=now)
    if paused_at is None:
        return release
    with connection.cursor() as cur:
        release.expire, release.expire_sample = _due(cur, chain, "funded", "seller_deadline", paused_at, now)
        release.release, release.release_sample = _due(cur, chain, "delivered", "buyer_deadline", paused_at, now)
        cur.execute("SELECT token_address, max(token_symbol), count(*), sum(amount) FROM ("
                    "  SELECT token_address, token_symbol, amount FROM orders WHERE status = 'funded' "
                    "  AND seller_deadline BETWEEN %s AND %s AND chain = %s"
                    "  UNION ALL SELECT token_address, token_symbol, amount FROM orders WHERE status = 'delivered' "
                    "  AND buyer_deadline BETWEEN %s AND %s AND chain = %s) o GROUP BY token_address ORDER BY 2, 1",
                    [paused_at, now, chain, paused_at, now, chain])
        release.value = [{"token": t, "symbol": s, "orders": n, "amount": Decimal(a)} for t, s, n, a in cur.fetchall()]
    return release


def open_graces(chain: str | None = None, *, now: datetime | None = None) -> list[TimeoutGrace]:
    """The graces that still hold orders off (pending their unpause, or not yet ended)."""
    now = now or timezone.now()
    qs = TimeoutGrace.objects.holding(now)
    if chain:
        qs = qs.filter(chain=chain)
    return list(qs.order_by("chain", "-created_at"))
