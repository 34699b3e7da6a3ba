"""Folding decoded logs into order, arbitrator and profile states, then writing them in one go.

Both the sync (serial or pipelined) and a rollback's replay go through `Fold`, so the mirror of an
order is always the fold of its events in (block, log index) order.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import mirror, rollup
from .events import Log
from .mirror import (
    ARBITRATOR_EVENTS,
    ORDER_EVENTS,
    TokenBook,
    arbitrator_wallets,
    load_arbitrators,
    load_orders,
    order_ids,
    order_line,
    reduce_arbitrator,
    reduce_order,
    ts,
)


class Fold:
    """Decoded logs folded into order, arbitrator and profile states, written afterwards in one go.

    `orders` may carry states from earlier batches of the same sync run (a cache the caller owns and
    drops on any error) and `persisted` the ids known to be in the table, so that new orders are COPied
    in and known ones upserted; `arbitrators` likewise. `replay=True` (a rollback): `orders` and
    `arbitrators` hold the only states to start from, nothing is loaded, and every write is an upsert.
    `add` reads from the database only the states it has not seen, and `finish` takes what to write, so
    the fold of one batch can run while the previous batch is still being written (see chain.pipeline).
    """

    def __init__(self, chain: str, tokens: TokenBook, *, orders: dict[int, dict] | None = None,
                 arbitrators: dict[str, dict] | None = None, persisted: set[int] | None = None,
                 replay: bool = False):
        self.chain, self.tokens, self.replay = chain, tokens, replay
        self.orders = {} if orders is None else orders
        self.arbitrators = {} if arbitrators is None else arbitrators
        self.persisted = set() if persisted is None else persisted
        self.touched_orders: set[int] = set()
        self.touched_arbs: set[str] = set()
        self.seen: dict[str, tuple[datetime, int, datetime]] = {}  # wallet → (first time, first block, last time)
        self.paused: bool | None = None

    def add(self, logs: list[Log]) -> None:
        chain, tokens, orders, arbitrators, seen = self.chain, self.tokens, self.orders, self.arbitrators, self.seen
        if not self.replay:
            loaded = load_orders(chain, order_ids(logs) - orders.keys())
            orders.update(loaded)
            self.persisted.update(loaded)
            arbitrators.update(load_arbitrators(chain, arbitrator_wallets(logs) - arbitrators.keys()))
        touched_orders, touched_arbs = self.touched_orders, self.touched_arbs
        for log in logs:
            name = log.name
            if name in ("Paused", "Unpaused") and log.contract == "escrow":
                self.paused = name == "Paused"
            elif name in ORDER_EVENTS:
                oid = log.args["orderId"]
                new = reduce_order(orders.get(oid), log, chain, tokens)
                if new is not None:
                    orders[oid] = new
                    touched_orders.add(oid)
                    if name == "OrderCreated":
                        when = ts(log.block_time)
                        for wallet in (new["buyer_wallet"], new["seller_wallet"]):
                            first = seen.get(wallet)
                            seen[wallet] = (first[0], first[1], when) if first else (when, log.block_number, when)
            elif name in ARBITRATOR_EVENTS:
                wallet = log.args["arbitrator"]
                new = reduce_arbitrator(arbitrators.get(wallet), log, chain, orders, tokens)
                if new is not None:
                    arbitrators[wallet] = new
                    touched_arbs.add(wallet)

    def finish(self) -> "Writes":
        """The states to write, taken now: a later `add` (the next batch) changes none of them. The
        orders are counted as persisted from here on (a failed write ends the run and its cache)."""
        orders, touched, persisted = self.orders, self.touched_orders, self.persisted
        fresh, known, days = [], [], set()
        for oid in touched:
            state = orders[oid]
            (known if self.replay or oid in persisted else fresh).append(order_line(state))
            if state["created_at"] and not self.replay:
                days.add(state["created_at"].date())
        persisted.update(touched)
        return Writes(self.chain, fresh, known, not self.replay, days,
                      [dict(self.arbitrators[w]) for w in self.touched_arbs], dict(self.seen), self.paused)


@dataclass
class Writes:
    """A fold's result, ready to write (order states already as COPY lines); `write` is the only part
    that touches the database."""

    chain: str
    fresh_orders: list[str]  # not in the table yet: COPied straight in
    known_orders: list[str]  # stored already (or, in a replay, perhaps)
    known_exist: bool  # ... certainly: updated in place
    days: set  # creation days to recount (a rollback recounts its days itself, once its orphans are gone)
    arbitrators: list[dict]
    seen: dict[str, tuple[datetime, int, datetime]]
    paused: bool | None

    def write(self) -> tuple[int, int]:
        """Write every state the fold touched. Returns (orders, arbitrators) written."""
        chain = self.chain
        mirror.write_profiles(chain, self.seen)
        if self.fresh_orders or self.known_orders:
            mirror.write_order_lines(self.fresh_orders, self.known_orders, known_exist=self.known_exist)
            rollup.refresh_days(chain, self.days)
        if self.arbitrators:
            mirror.write_arbitrators(self.arbitrators)
        if self.paused is not None:
            mirror.write_paused(chain, self.paused)
        return len(self.fresh_orders) + len(self.known_orders), len(self.arbitrators)


def apply_logs(chain: str, logs: list[Log], tokens: TokenBook, *, orders: dict[int, dict] | None = None,
               arbitrators: dict[str, dict] | None = None, persisted: set[int] | None = None,
               replay: bool = False) -> tuple[int, int]:
    """Fold decoded logs into orders, arbitrators and profiles and write them (see `Fold`). Returns
    (orders, arbitrators) written."""
    fold = Fold(chain, tokens, orders=orders, arbitrators=arbitrators, persisted=persisted, replay=replay)
    fold.add(logs)
    return fold.finish().write()
