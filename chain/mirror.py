"""The mirror tables' side of applying decoded logs: pure reducers of one event, loading states, and
writing them in bulk (COPY text). chain.fold puts them together.
"""
from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from decimal import Decimal
from functools import lru_cache
from typing import Iterable

import psycopg.errors
from django.db import IntegrityError, connection, transaction

from .events import Log, dumps_args
from .models import CloseReason, OrderStatus, Token

ORDER_COLUMNS = (
    "chain", "onchain_id", "buyer_wallet", "seller_wallet", "arbitrator_wallet", "token_address", "token_symbol",
    "amount", "platform_fee", "status", "close_reason", "created_at", "updated_at", "delivered_at", "disputed_at",
    "closed_at", "seller_deadline", "buyer_deadline", "dispute_deadline", "disputed_by", "evidence_cids",
    "created_tx_hash", "last_tx_hash", "created_block", "last_block",
)
ARBITRATOR_COLUMNS = ("chain", "wallet", "stake_amount", "reputation", "total_resolved", "total_earned",
                      "is_active", "registered_at", "updated_at")
NATIVE_DECIMALS = 18
_MAX_EPOCH = 253402300799  # 9999-12-31: Python's datetime cannot go further
_CID = re.compile(r"^[A-Za-z0-9]{8,128}$")

ORDER_EVENTS = {"OrderCreated", "OrderDelivered", "OrderCompleted", "OrderCancelled", "OrderDisputed",
                "EvidenceSubmitted", "DisputeResolved", "OrderExpired", "OrderAutoReleased"}
ARBITRATOR_EVENTS = {"ArbitratorRegistered", "ArbitratorDeregistered", "ArbitratorResolved", "ReputationChanged",
                     "ArbitratorDeactivated"}


@lru_cache(maxsize=65536)  # a block's events share its timestamp, and deadlines are block time + a window
def ts(epoch: int | None) -> datetime | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(min(max(int(epoch), 0), _MAX_EPOCH), tz=timezone.utc)


def units(raw: int, decimals: int) -> Decimal:
    return Decimal(raw).scaleb(-decimals)


def safe_cid(value: str) -> str:
    """Evidence CIDs come from anyone on chain: keep real-looking CIDs, mark the rest."""
    if _CID.match(value):
        return value
    printable = "".join(ch for ch in value if ch.isprintable() and ch not in "{},\"\\")[:60]
    return f"invalid:{printable}"[:128]


class TokenBook:
    """Decimals and symbols of the tokens of one chain; unknown tokens are resolved before applying."""

    def __init__(self, tokens: dict[str, tuple[str, int]]):
        self.tokens = tokens

    @classmethod
    def for_chain(cls, chain: str) -> "TokenBook":
        """The tokens the mirror knows on `chain` (chain_tokens)."""
        return cls({t.address: (t.symbol, t.decimals) for t in Token.objects.filter(chain=chain)})

    def decimals(self, address: str) -> int:
        return self.tokens.get(address, ("", 18))[1]

    def symbol(self, address: str) -> str:
        return self.tokens.get(address, ("?", 18))[0]


def order_ids(logs: Iterable[Log]) -> set[int]:
    ids = set()
    for log in logs:
        if log.name in ORDER_EVENTS or log.name == "ArbitratorResolved":
            ids.add(log.args["orderId"])
    return ids


def arbitrator_wallets(logs: Iterable[Log]) -> set[str]:
    return {log.args["arbitrator"] for log in logs if log.name in ARBITRATOR_EVENTS}


def reduce_order(state: dict | None, log: Log, chain: str, tokens: TokenBook) -> dict | None:
    """One event applied to one order's state (a dict of ORDER_COLUMNS). Returns the new state."""
    a, when = log.args, ts(log.block_time)
    if log.name == "OrderCreated":
        token = a["token"]
        decimals = tokens.decimals(token)
        state = {
            "chain": chain, "onchain_id": a["orderId"], "buyer_wallet": a["buyer"], "seller_wallet": a["seller"],
            "arbitrator_wallet": None, "token_address": token, "token_symbol": tokens.symbol(token)[:16],
            "amount": units(a["amount"], decimals), "platform_fee": units(a["platformFee"], decimals),
            "status": OrderStatus.FUNDED, "close_reason": None, "created_at": when, "updated_at": when,
            "delivered_at": None, "disputed_at": None, "closed_at": None,
            "seller_deadline": ts(a["sellerDeadline"]), "buyer_deadline": None, "dispute_deadline": None,
            "disputed_by": None, "evidence_cids": [], "created_tx_hash": log.tx_hash, "last_tx_hash": log.tx_hash,
            "created_block": log.block_number, "last_block": log.block_number,
        }
        return state
    if state is None:
        return None  # an event for an order created before the mirror's start block
    state = dict(state)
    name = log.name
    if name == "OrderDelivered":
        state.update(status=OrderStatus.DELIVERED, delivered_at=when, buyer_deadline=ts(a["buyerDeadline"]))
    elif name == "OrderAutoReleased":
        state["close_reason"] = CloseReason.AUTO_RELEASED
    elif name == "OrderCompleted":
        reason = (CloseReason.AUTO_RELEASED if state.get("close_reason") == CloseReason.AUTO_RELEASED
                  else CloseReason.CONFIRMED)
        state.update(status=OrderStatus.COMPLETED, closed_at=when, close_reason=reason)
    elif name == "OrderCancelled":
        state.update(status=OrderStatus.CANCELLED, closed_at=when, close_reason=CloseReason.CANCELLED)
    elif name == "OrderDisputed":
        state.update(status=OrderStatus.DISPUTED, disputed_at=when, arbitrator_wallet=a["arbitrator"],
                     disputed_by=a["openedBy"], dispute_deadline=ts(a["disputeDeadline"]),
                     evidence_cids=[*state["evidence_cids"], safe_cid(a["evidenceCid"])] if a["evidenceCid"] else
                     list(state["evidence_cids"]))
    elif name == "EvidenceSubmitted":
        state["evidence_cids"] = [*state["evidence_cids"], safe_cid(a["cid"])]
    elif name == "DisputeResolved":
        state.update(status=OrderStatus.RESOLVED_BUYER if a["favorBuyer"] else OrderStatus.RESOLVED_SELLER,
                     closed_at=when, close_reason=CloseReason.OWNER if a["byOwner"] else CloseReason.ARBITRATOR)
    elif name == "OrderExpired":
        state.update(status=OrderStatus.EXPIRED, closed_at=when, close_reason=CloseReason.SELLER_TIMEOUT)
    else:
        return state
    state.update(updated_at=when, last_tx_hash=log.tx_hash, last_block=log.block_number)
    return state


def reduce_arbitrator(state: dict | None, log: Log, chain: str, orders: dict[int, dict],
                      tokens: TokenBook) -> dict | None:
    a, when = log.args, ts(log.block_time)
    if log.name == "ArbitratorRegistered":
        base = state or {"chain": chain, "wallet": a["arbitrator"], "total_resolved": 0, "total_earned": Decimal(0),
                         "registered_at": when}
        return {**base, "stake_amount": units(a["stakeAmount"], NATIVE_DECIMALS),
                "reputation": min(int(a["reputation"]), 100), "is_active": True, "updated_at": when}
    if state is None:
        return None
    state = dict(state, updated_at=when)
    if log.name == "ArbitratorDeregistered":
        state.update(is_active=False, stake_amount=Decimal(0))
    elif log.name == "ArbitratorResolved":
        order = orders.get(a["orderId"])
        decimals = tokens.decimals(order["token_address"]) if order else 18
        state.update(total_resolved=state["total_resolved"] + 1,
                     total_earned=state["total_earned"] + units(a["earned"], decimals))
    elif log.name == "ReputationChanged":
        state["reputation"] = min(int(a["newReputation"]), 100)
    elif log.name == "ArbitratorDeactivated":
        state["is_active"] = False
    return state


# ---------------------------------------------------------------------------- loading and writing

_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _text(value) -> str:
    """One value in COPY text format (the hot path builds rows as text: write_row costs 10x more)."""
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value if value.isalnum() else value.translate(_COPY_ESCAPES)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return ("{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in value) + "}"
                ).translate(_COPY_ESCAPES)
    return str(value)


def _copy_lines(cur, table: str, columns: tuple[str, ...], lines: Iterable[str], chunk: int = 5000) -> None:
    with cur.connection.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        buf = []
        for line in lines:
            buf.append(line)
            if len(buf) >= chunk:
                copy.write("\n".join(buf) + "\n")
                buf.clear()
        if buf:
            copy.write("\n".join(buf) + "\n")


def _copy_text(cur, table: str, columns: tuple[str, ...], rows: Iterable[tuple]) -> None:
    _copy_lines(cur, table, columns, ("\t".join(map(_text, row)) for row in rows))


def load_orders(chain: str, ids: Iterable[int]) -> dict[int, dict]:
    ids = list(ids)
    if not ids:
        return {}
    with connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(ORDER_COLUMNS)} FROM orders WHERE chain = %s AND onchain_id = ANY(%s)",
                    [chain, ids])
        return {row[1]: dict(zip(ORDER_COLUMNS, row, strict=True)) for row in cur.fetchall()}


def load_arbitrators(chain: str, wallets: Iterable[str]) -> dict[str, dict]:
    wallets = list(wallets)
    if not wallets:
        return {}
    with connection.cursor() as cur:
        cur.execute(f"SELECT {', '.join(ARBITRATOR_COLUMNS)} FROM arbitrators WHERE chain = %s AND wallet = ANY(%s)",
                    [chain, wallets])
        return {row[1]: dict(zip(ARBITRATOR_COLUMNS, row, strict=True)) for row in cur.fetchall()}


def _temp_twin(cur, table: str, columns: tuple[str, ...]) -> None:
    """tmp_<table>: a session's scratch copy of `table`'s columns, emptied at each commit."""
    cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS tmp_{table} ON COMMIT DELETE ROWS AS "
                f"SELECT {', '.join(columns)} FROM {table} WITH NO DATA")


def _copy_upsert(table: str, columns: tuple[str, ...], conflict: str, rows: Iterable[tuple] = (), *,
                 lines: Iterable[str] = ()) -> None:
    """COPY rows (or ready COPY text lines) into a temporary twin of `table`, then one INSERT … ON CONFLICT
    DO UPDATE."""
    update = tuple(c for c in columns if c not in conflict.split(", "))
    tmp = f"tmp_{table}"
    with connection.cursor() as cur:
        _temp_twin(cur, table, columns)
        if lines:
            _copy_lines(cur, tmp, columns, lines)
        else:
            _copy_text(cur, tmp, columns, rows)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
        cur.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {tmp} "
                    f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}")
        cur.execute(f"TRUNCATE {tmp}")


def _t(value: str | None) -> str:
    """A string (or NULL) in COPY text format; hex and identifiers need no escaping."""
    if value is None:
        return "\\N"
    return value if value.isalnum() else value.translate(_COPY_ESCAPES)


_ISO: dict[datetime, str] = {}  # the few distinct block times of a batch, formatted once each


def _dt(value: datetime | None) -> str:
    if value is None:
        return "\\N"
    text = _ISO.get(value)
    if text is None:
        if len(_ISO) > 65536:
            _ISO.clear()
        text = _ISO[value] = value.isoformat()
    return text


def _n(value) -> str:
    return "\\N" if value is None else str(value)


def order_line(s: dict) -> str:
    """One order state as a COPY text line in ORDER_COLUMNS order: `_text` per value, unrolled (the sync
    writes every order it touches; the generic path costs it twice as much). Wallets and hashes are
    lower-case hex (checked by parse_logs and its decoders, and by the table's CHECKs): nothing to escape."""
    n = "\\N"
    arbitrator, disputed_by, token = s["arbitrator_wallet"], s["disputed_by"], s["token_address"]
    return (f"{s['chain']}\t{s['onchain_id']}\t{s['buyer_wallet']}\t{s['seller_wallet']}\t"
            f"{n if arbitrator is None else arbitrator}\t{n if token is None else token}\t{_t(s['token_symbol'])}\t"
            f"{_n(s['amount'])}\t{_n(s['platform_fee'])}\t{_t(s['status'])}\t{_t(s['close_reason'])}\t"
            f"{_dt(s['created_at'])}\t{_dt(s['updated_at'])}\t{_dt(s['delivered_at'])}\t{_dt(s['disputed_at'])}\t"
            f"{_dt(s['closed_at'])}\t{_dt(s['seller_deadline'])}\t{_dt(s['buyer_deadline'])}\t"
            f"{_dt(s['dispute_deadline'])}\t{n if disputed_by is None else disputed_by}\t"
            f"{_text(s['evidence_cids']) if s['evidence_cids'] else '{}'}\t{s['created_tx_hash']}\t"
            f"{s['last_tx_hash']}\t{_n(s['created_block'])}\t{_n(s['last_block'])}")


def write_order_lines(fresh: list[str], known: list[str], *, known_exist: bool = False) -> None:
    """Write orders given as COPY lines: `fresh` ones are known not to exist yet (COPied straight in), `known`
    ones are upserted, or updated in place with `known_exist` (the caller knows every one is stored: no
    speculative insert, a third cheaper; a row found missing raises)."""
    if fresh:
        with connection.cursor() as cur:
            _copy_lines(cur, "orders", ORDER_COLUMNS, fresh)
    if known and known_exist:
        keys = ("chain", "onchain_id")
        with connection.cursor() as cur:
            _temp_twin(cur, "orders", ORDER_COLUMNS)
            _copy_lines(cur, "tmp_orders", ORDER_COLUMNS, known)
            sets = ", ".join(f"{c} = t.{c}" for c in ORDER_COLUMNS if c not in keys)
            cur.execute(f"UPDATE orders o SET {sets} FROM tmp_orders t "
                        "WHERE o.chain = t.chain AND o.onchain_id = t.onchain_id")
            if cur.rowcount != len(known):
                cur.execute("SELECT t.chain, t.onchain_id FROM tmp_orders t WHERE NOT EXISTS (SELECT 1 FROM orders o "
                            "WHERE o.chain = t.chain AND o.onchain_id = t.onchain_id) ORDER BY 2 LIMIT 10")
                missing = cur.fetchall()
                raise RuntimeError(
                    f"{len(known) - cur.rowcount} order(s) the sync had stored are missing from the mirror (first: "
                    f"{', '.join(f'{c} #{i}' for c, i in missing)}): deleted by hand? Re-sync the chain from the "
                    "block that created them (Sync cursors → Re-sync from block N).")
            cur.execute("TRUNCATE tmp_orders")
    elif known:
        _copy_upsert("orders", ORDER_COLUMNS, "chain, onchain_id", lines=known)


def write_arbitrators(states: Iterable[dict]) -> None:
    _copy_upsert("arbitrators", ARBITRATOR_COLUMNS, "chain, wallet",
                 (tuple(s[c] for c in ARBITRATOR_COLUMNS) for s in states))


def write_profiles(chain: str, seen: dict[str, tuple[datetime, int, datetime]]) -> None:
    """Create profiles for wallets seen in orders (first seen: time and block); move last_active_at
    forward to their latest order in these logs."""
    if not seen:
        return
    wallets = list(seen)
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO user_profiles (wallet, created_at, last_active_at, first_seen_chain, first_seen_block) "
            "SELECT w, t, l, %s, b FROM unnest(%s::varchar[], %s::timestamptz[], %s::bigint[], %s::timestamptz[]) "
            "AS u(w, t, b, l) "
            "ON CONFLICT (wallet) DO UPDATE SET last_active_at = GREATEST(user_profiles.last_active_at, "
            "EXCLUDED.last_active_at)",
            [chain, wallets, [seen[w][0] for w in wallets], [seen[w][1] for w in wallets],
             [seen[w][2] for w in wallets]],
        )


def write_paused(chain: str, paused: bool) -> None:
    with connection.cursor() as cur:
        cur.execute("INSERT INTO chain_state (chain, paused, paused_checked_at, solvency_detail) "
                    "VALUES (%s, %s, now(), '{}') ON CONFLICT (chain) DO UPDATE SET paused = EXCLUDED.paused, "
                    "paused_checked_at = EXCLUDED.paused_checked_at", [chain, paused])


def _clean_json(value):
    """JSONB refuses NUL characters; chain strings may carry anything."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


EVENT_COLUMNS = ("chain", "block_number", "block_hash", "block_time", "tx_hash", "log_index", "address", "contract",
                 "event", "order_id", "wallet", "args", "decode_error")


def event_lines(chain: str, logs: list[Log]):
    """COPY text lines of raw events. Hashes, addresses and names are hex or identifiers (nothing to
    escape); the JSON args and the error text are escaped."""
    for log in logs:
        args = log.args
        order_id = wallet = "\\N"
        if not log.error:
            oid = args.get("orderId")
            if oid is not None and oid < 2**63:
                order_id = str(oid)
            if log.contract == "pool":
                wallet = args.get("arbitrator") or "\\N"
        stamp = _dt(ts(log.block_time))
        text = log.args_json or dumps_args(args)
        if "\\" in text:
            if "\\u0000" in text:  # JSONB refuses NUL characters; chain strings may carry anything
                text = dumps_args(_clean_json(args))
            text = text.translate(_COPY_ESCAPES)
        # Hashes are checked hex (parse_logs); a log from an unexpected address keeps it as given: escaped.
        address = log.address.translate(_COPY_ESCAPES) if log.error else log.address
        yield (f"{chain}\t{log.block_number}\t{log.block_hash}\t{stamp}\t{log.tx_hash}\t{log.log_index}\t"
               f"{address}\t{log.contract}\t{log.name}\t{order_id}\t{wallet}\t{text}\t"
               f"{log.error.translate(_COPY_ESCAPES)}")


def insert_events(chain: str, logs: list[Log], *, fresh: bool = False) -> set[tuple[str, int]]:
    """Insert raw logs; returns the (tx_hash, log_index) keys that were new (idempotency).

    `fresh=True` (the batch lies wholly above the cursor, so none of it can be stored yet): one COPY
    straight into the table; the unique constraint still guards it. Otherwise COPY into a temporary
    table and INSERT … ON CONFLICT DO NOTHING RETURNING the new keys.
    """
    if not logs:
        return set()
    if fresh:
        try:
            with transaction.atomic(), connection.cursor() as cur:  # a savepoint: a collision falls back below
                _copy_lines(cur, "chain_events", EVENT_COLUMNS, event_lines(chain, logs))
            return {(log.tx_hash, log.log_index) for log in logs}
        except (IntegrityError, psycopg.errors.UniqueViolation):
            pass  # the cursor was moved back by hand: some of these are stored already
    with connection.cursor() as cur:
        _temp_twin(cur, "chain_events", EVENT_COLUMNS)
        _copy_lines(cur, "tmp_chain_events", EVENT_COLUMNS, event_lines(chain, logs))
        cur.execute(f"INSERT INTO chain_events ({', '.join(EVENT_COLUMNS)}) SELECT {', '.join(EVENT_COLUMNS)} "
                    "FROM tmp_chain_events ON CONFLICT (chain, tx_hash, log_index) DO NOTHING "
                    "RETURNING tx_hash, log_index")
        new = set(cur.fetchall())
        cur.execute("TRUNCATE tmp_chain_events")
    return new


def logs_from_rows(rows: Iterable[tuple]) -> list[Log]:
    """Rebuild `Log`s from chain_events rows (block_number, block_hash, block_time, tx_hash, log_index,
    address, contract, event, args) for a replay."""
    out = []
    for bn, bh, bt, tx, li, addr, contract, event, args in rows:
        if isinstance(args, str):  # a raw cursor gets jsonb as text under Django's psycopg 3 setup
            args = json.loads(args)
        out.append(Log(bn, bh, int(bt.timestamp()) if bt else None, tx, li, addr, contract, event, args))
    return out
