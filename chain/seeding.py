"""Bulk demo data for scale tests and benchmarks: realistic, consistent rows written with COPY.

Orders span the last 60 days on both chains and several tokens; every status is present, with
5% of orders disputed (and 3% resolved disputes); arbitrators have varied reputation (some
below 20); a few wallets are blacklisted; each chain has a sync cursor.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal

from django.db import connection, transaction

from . import rollup
from .models import OrderStatus

DAY = 86_400
# The demo and benchmark data is the runbook's two-chain marketplace, whatever CHAINS configures.
BSC, ETHEREUM = "bsc", "ethereum"
SEED_CHAINS = (BSC, ETHEREUM)
TOKENS = {
    BSC: [("USDT", "0x55d398326f99059ff775485246999027b3197955"),
          ("USDC", "0x8ac76a51cc950d9822d68b83fe1ad97b32cd580d"),
          ("BUSD", "0xe9e7cea3dedca5984780bafc599bd69add087d56")],
    ETHEREUM: [("USDT", "0xdac17f958d2ee523a2206206994597c13d831ec7"),
               ("USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48")],
}
BLOCK_TIME = {BSC: 0.75, ETHEREUM: 12.0}
FIRST_BLOCK = {BSC: 40_000_000, ETHEREUM: 19_000_000}  # block at the start of the window
# Cumulative status weights: 5% disputed, 1.5% each resolved way, the rest spread realistically.
STATUS_WEIGHTS = [
    (OrderStatus.COMPLETED, 0.70), (OrderStatus.DISPUTED, 0.05), (OrderStatus.RESOLVED_BUYER, 0.015),
    (OrderStatus.RESOLVED_SELLER, 0.015), (OrderStatus.CANCELLED, 0.06), (OrderStatus.EXPIRED, 0.04),
    (OrderStatus.FUNDED, 0.05), (OrderStatus.DELIVERED, 0.07),
]
ORDER_COLUMNS = (
    "chain", "onchain_id", "buyer_wallet", "seller_wallet", "arbitrator_wallet", "token_address", "token_symbol",
    "amount", "platform_fee", "status", "close_reason", "created_at", "updated_at", "delivered_at", "disputed_at",
    "closed_at", "seller_deadline", "buyer_deadline", "dispute_deadline", "disputed_by", "evidence_cids",
    "created_tx_hash", "last_tx_hash", "created_block", "last_block",
)


@dataclass
class SeedResult:
    orders: int
    users: int
    arbitrators: int
    blacklisted: int


def _wallet(rng: random.Random) -> str:
    return "0x%040x" % rng.getrandbits(160)


def _hash(rng: random.Random) -> str:
    return "0x%064x" % rng.getrandbits(256)


def _ts(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(sep=" ")


def _cid(rng: random.Random) -> str:
    return "bafybei" + hashlib.sha256(rng.getrandbits(64).to_bytes(8, "big")).hexdigest()[:52]


def is_empty() -> bool:
    with connection.cursor() as cur:
        cur.execute("SELECT NOT EXISTS (SELECT 1 FROM orders)")
        return cur.fetchone()[0]


MIRROR_TABLES = ("orders", "arbitrators", "chain_events", "chain_block_hashes", "event_sync_cursor", "chain_tokens",
                 "chain_reconciliation_drift", "chain_rpc_providers", "chain_sync_catchup", "blacklist",
                 "user_profiles", "chain_daily_order_stats", "chain_state")


def reset() -> None:
    """Empty every table the sync or the seed fills (not the audit log, which is append-only): demo data and
    a fresh local chain both start from an empty mirror, with no raw events or block hashes of the old one."""
    with connection.cursor() as cur:
        # Inside a caller's transaction that just wrote rows, deferred foreign-key checks are still
        # pending and PostgreSQL refuses TRUNCATE; run them now.
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cur.execute(f"TRUNCATE {', '.join(MIRROR_TABLES)} CASCADE")


def seed_demo(*, orders: int, seed: int = 7, now: datetime | None = None, chunk: int = 50_000) -> SeedResult:
    """Write `orders` orders plus users, arbitrators, a few blacklist rows and cursors, in one transaction."""
    rng = random.Random(seed)
    now_ts = (now or datetime.now(timezone.utc)).timestamp()
    start_ts = now_ts - 60 * DAY
    n_users = max(200, orders // 20)
    users = [_wallet(rng) for _ in range(n_users)]
    sellers = users[: max(20, n_users // 4)]
    arbitrators = {chain: [_wallet(rng) for _ in range(40)] for chain in SEED_CHAINS}

    with transaction.atomic(), connection.cursor() as cur:
        raw = cur.connection  # psycopg 3 connection: COPY
        with raw.cursor().copy("COPY user_profiles (wallet, display_name, rating, tier, created_at, last_active_at) "
                               "FROM STDIN") as copy:
            buf = []
            for i, wallet in enumerate(users):
                # Most accounts predate the window; 5% are new this week (RB-04: new accounts).
                age = rng.uniform(0, 7 * DAY) if i % 20 == 0 else rng.uniform(61 * DAY, 400 * DAY)
                rating = f"{rng.uniform(2.5, 5.0):.2f}" if rng.random() < 0.8 else "\\N"
                tier = rng.choice(("new", "bronze", "silver", "gold"))
                active = rng.uniform(0, 5 * DAY)
                buf.append(f"{wallet}\tuser{i}\t{rating}\t{tier}\t{_ts(now_ts - age)}\t{_ts(now_ts - active)}\n")
                if len(buf) >= chunk:
                    copy.write("".join(buf))
                    buf.clear()
            copy.write("".join(buf))

        with raw.cursor().copy("COPY arbitrators (chain, wallet, stake_amount, reputation, total_resolved, "
                               "total_earned, is_active, registered_at, updated_at) FROM STDIN") as copy:
            for chain, wallets in arbitrators.items():
                for j, wallet in enumerate(wallets):
                    reputation = rng.choice((5, 12, 15, 18)) if j % 8 == 0 else rng.randint(20, 100)
                    active = "f" if reputation < 10 else "t"
                    copy.write(f"{chain}\t{wallet}\t{rng.choice((1, 2, 5, 10))}\t{reputation}\t{rng.randint(0, 400)}\t"
                               f"{rng.uniform(0, 2000):.6f}\t{active}\t{_ts(start_ts - rng.uniform(0, 200 * DAY))}\t"
                               f"{_ts(now_ts - rng.uniform(0, 10 * DAY))}\n")

        next_id = {chain: 0 for chain in SEED_CHAINS}
        max_block = {chain: 0 for chain in SEED_CHAINS}
        statuses = [s for s, _ in STATUS_WEIGHTS]
        weights = [w for _, w in STATUS_WEIGHTS]
        # Bulk-load practice: drop the secondary indexes, COPY, rebuild them once (each index is then
        # built in one sorted pass instead of a million random inserts). All in this transaction.
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'orders' AND indexname NOT IN "
                    "(SELECT conname FROM pg_constraint WHERE conrelid = 'orders'::regclass)")
        secondary = cur.fetchall()
        # Foreign keys too: re-adding one checks all rows in one join instead of two lookups per row.
        cur.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                    "WHERE conrelid = 'orders'::regclass AND contype = 'f'")
        foreign_keys = cur.fetchall()
        for name, _ in foreign_keys:
            cur.execute(f'ALTER TABLE orders DROP CONSTRAINT "{name}"')
        for name, _ in secondary:
            cur.execute(f'DROP INDEX "{name}"')
        with raw.cursor().copy(f"COPY orders ({', '.join(ORDER_COLUMNS)}) FROM STDIN") as copy:
            buf = []
            # Created times rise with the index, so on-chain ids and blocks increase with time.
            for i in range(orders):
                chain = BSC if rng.random() < 0.75 else ETHEREUM
                next_id[chain] += 1
                created = start_ts + (i + rng.random()) * (60 * DAY) / orders
                symbol, token = rng.choice(TOKENS[chain])
                buyer = rng.choice(users)
                seller = rng.choice(sellers)
                if seller == buyer:
                    seller = sellers[(sellers.index(seller) + 1) % len(sellers)]
                amount = Decimal(min(rng.lognormvariate(4.5, 1.2), 60_000)).quantize(Decimal("0.01"))
                fee = (amount / 100).quantize(Decimal("0.000001"))
                age = now_ts - created
                status = rng.choices(statuses, weights)[0]
                if age > 4 * DAY and status in (OrderStatus.FUNDED, OrderStatus.DELIVERED):
                    status = OrderStatus.COMPLETED  # old orders have settled one way or another
                row = _order_row(rng, buyer, seller, status, created, now_ts, arbitrators[chain])
                block = FIRST_BLOCK[chain] + int((created - start_ts) / BLOCK_TIME[chain])
                last_block = block + int((row["updated"] - created) / BLOCK_TIME[chain])
                max_block[chain] = max(max_block[chain], last_block)
                buf.append(_order_line(chain, next_id[chain], buyer, seller, token, symbol, amount, fee, status,
                                       row, created, block, last_block, rng))
                if len(buf) >= chunk:
                    copy.write("".join(buf))
                    buf.clear()
            copy.write("".join(buf))

        for _, definition in secondary:
            cur.execute(definition)
        for name, definition in foreign_keys:
            cur.execute(f'ALTER TABLE orders ADD CONSTRAINT "{name}" {definition}')

        # A few blacklisted wallets (RB-04), so filters and the profile flag have something to show.
        blacklisted = rng.sample(users, min(12, len(users)))
        with raw.cursor().copy("COPY blacklist (wallet, reason, source, created_at) FROM STDIN") as copy:
            for wallet in blacklisted:
                copy.write(f"{wallet}\tHigh dispute rate (seed data)\t{rng.choice(('manual', 'automatic'))}\t"
                           f"{_ts(now_ts - rng.uniform(0, 30 * DAY))}\n")
        cur.execute("UPDATE user_profiles SET is_blacklisted = true WHERE wallet = ANY(%s)", [blacklisted])

        for chain in SEED_CHAINS:
            cur.execute(
                "INSERT INTO event_sync_cursor (chain, last_block, updated_at, head_block, head_seen_at, last_error) "
                "VALUES (%s, %s, now(), %s, now(), '') ON CONFLICT (chain) DO UPDATE SET "
                "last_block = EXCLUDED.last_block, head_block = EXCLUDED.head_block, updated_at = now()",
                [chain, max_block[chain], max_block[chain] + 3],
            )
        rollup.rebuild_all()
    with connection.cursor() as cur:
        cur.execute("ANALYZE user_profiles; ANALYZE orders; ANALYZE arbitrators; ANALYZE blacklist; "
                    "ANALYZE chain_daily_order_stats;")
    return SeedResult(orders=orders, users=n_users, arbitrators=sum(len(v) for v in arbitrators.values()),
                      blacklisted=len(blacklisted))


def _order_row(rng, buyer, seller, status, created, now_ts, arbs):
    """Times and parties consistent with the order's status."""
    seller_deadline = created + DAY
    row = {"arbitrator": None, "close_reason": None, "delivered": None, "disputed": None, "closed": None,
           "buyer_deadline": None, "dispute_deadline": None, "disputed_by": None, "evidence": "{}",
           "updated": created}
    latest = min(now_ts, created + 6 * DAY)
    if status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED):
        closed = created + (rng.uniform(60, DAY) if status == OrderStatus.CANCELLED else DAY + rng.uniform(60, 3600))
        closed = min(closed, now_ts)
        row.update(closed=closed, updated=closed,
                   close_reason="cancelled" if status == OrderStatus.CANCELLED else "seller_timeout")
    elif status != OrderStatus.FUNDED:
        delivered = min(created + rng.uniform(300, DAY * 0.9), now_ts)
        row.update(delivered=delivered, updated=delivered, buyer_deadline=delivered + 3 * DAY)
        if status == OrderStatus.COMPLETED:
            auto = rng.random() < 0.1
            closed = min(delivered + (3 * DAY + rng.uniform(60, 3600) if auto else rng.uniform(60, 2 * DAY)), latest)
            row.update(closed=max(closed, delivered), updated=max(closed, delivered),
                       close_reason="auto_released" if auto else "confirmed")
        elif status in (OrderStatus.DISPUTED, OrderStatus.RESOLVED_BUYER, OrderStatus.RESOLVED_SELLER):
            disputed = min(delivered + rng.uniform(60, 2 * DAY), now_ts)
            row.update(disputed=disputed, updated=disputed, dispute_deadline=disputed + 3 * DAY,
                       arbitrator=rng.choice(arbs), disputed_by=buyer if rng.random() < 0.8 else seller,
                       evidence="{" + ",".join(_cid(rng) for _ in range(rng.randint(1, 3))) + "}")
            if status != OrderStatus.DISPUTED:
                closed = min(disputed + rng.uniform(3600, 4 * DAY), now_ts)
                owner = rng.random() < 0.1
                row.update(closed=closed, updated=closed, close_reason="owner" if owner else "arbitrator")
    row["seller_deadline"] = seller_deadline
    return row


def _opt(epoch):
    return _ts(epoch) if epoch is not None else "\\N"


def _order_line(chain, onchain_id, buyer, seller, token, symbol, amount, fee, status, row, created, block,
                last_block, rng) -> str:
    created_tx = _hash(rng)
    last_tx = created_tx if row["updated"] == created else _hash(rng)
    return "\t".join((
        chain, str(onchain_id), buyer, seller, row["arbitrator"] or "\\N", token, symbol, str(amount), str(fee),
        status, row["close_reason"] or "\\N", _ts(created), _ts(row["updated"]), _opt(row["delivered"]),
        _opt(row["disputed"]), _opt(row["closed"]), _opt(row["seller_deadline"]), _opt(row["buyer_deadline"]),
        _opt(row["dispute_deadline"]), row["disputed_by"] or "\\N", row["evidence"], created_tx, last_tx,
        str(block), str(last_block),
    )) + "\n"
