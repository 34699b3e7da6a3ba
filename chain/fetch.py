"""Fetching a chain's logs for the sync: plain eth_getLogs in batches, decoded, with a prefetching thread
that keeps several requests in flight and hands their results on in block order.

Ranges are sized on the density just seen (about CHUNK_LOGS logs each), grow fast through empty stretches when the
provider is distant, and stay within the serving provider's block cap (configured, or learnt from a refusal that names
it); a refusal for the number of results takes the range the provider suggests, or half. Only the sync calls this
module; it reads the chain through `chain.rpc` and writes nothing but `chain_tokens` rows for tokens met for the first
time.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from .config import ChainConfig
from .events import Log, parse_logs
from .mirror import TokenBook
from .models import Token
from .rpc import RangeOverCap, RangeTimedOut, RpcClient, RpcError
from .rpc_limits import range_limit_in, suggested_range_end

logger = logging.getLogger(__name__)

CHUNK_LOGS = 5_000  # logs per eth_getLogs request once the chain's density is known
FIRST_CHUNK_BLOCKS = 10
# Ranges asked for and not handed on yet, at most: those answered behind a busy range that is still out (refused,
# narrowed, then decoded: about a second) keep the window full meanwhile, at 8 in flight and 50 ms ~150 a second.
WINDOW_RANGES = 256
# Ranges grow fast through empty stretches (`FetchRules.empty_growth`, compounding over a window's answers) only
# from a provider whose fastest light answer takes this long: there each request saved is a round trip saved. From a
# node next door, requests cost little and a range grown fast past a few empty blocks can land on a busy history
# (the sync benchmark's: 160 blocks, 58,000 logs in one answer, and its peak memory over 500 MB); ranges double.
FAST_GROWTH_SECONDS = 0.005
# ... and only from an empty answer at least this wide: twenty empty blocks say little about the next hundreds (the
# sync_remote benchmark's busy history begins 80 blocks after its deployment: ranges grown eightfold from 20-block
# answers reached it 160-277 blocks wide and were refused for their count again and again).
FAST_GROWTH_BLOCKS = 40


@dataclass(frozen=True)
class FetchRules:
    """How ranges are sized. The defaults are the sync's; `before_caps()` is the range logic it had before providers'
    caps were learnt and ranges grew fast through empty stretches (what the catchup benchmark's baseline runs)."""

    empty_growth: int = 8  # a range that returned nothing: the next may be this many times wider (else twice)
    compound: bool = True  # each answer may double the size in use, within what its density allows
    learn_caps: bool = True  # a refusal naming the provider's block limit sets that provider's cap
    suggested_ranges: bool = True  # a refusal suggesting a range ("Try with this block range [a, b]") is followed
    hash_every_range: bool = False  # ask for each range's last block hash even far below the head

    @classmethod
    def before_caps(cls) -> "FetchRules":
        return cls(empty_growth=2, compound=False, learn_caps=False, suggested_ranges=False, hash_every_range=True)


RULES = FetchRules()


@dataclass
class Batch:
    from_block: int
    to_block: int
    to_hash: str | None  # None for a range ending far below the head: no reorg the sync guards against reaches it
    logs: list[Log]
    # Metadata of tokens the fetch met for the first time, read while fetching so the apply never waits on RPC.
    token_meta: dict[str, tuple[str, int]] = field(default_factory=dict)


def token_book(cfg: ChainConfig, client: RpcClient, logs: list[Log],
               meta: dict[str, tuple[str, int]] | None = None, book: TokenBook | None = None) -> TokenBook:
    """Decimals for every token in these logs; an unknown token is read from the chain once (or taken from
    `meta`, read by the fetch). `book`, when given, is extended and returned."""
    book = book or TokenBook.for_chain(cfg.key)
    known = book.tokens
    for log in logs:
        if log.name == "OrderCreated" and log.args["token"] not in known:
            address = log.args["token"]
            symbol, decimals = (meta or {}).get(address) or read_token_metadata(client, address)
            Token.objects.get_or_create(chain=cfg.key, address=address,
                                        defaults={"symbol": symbol, "decimals": decimals})
            known[address] = (symbol, decimals)
    return book


def read_token_metadata(client: RpcClient, address: str) -> tuple[str, int]:
    from eth_abi import decode as abi_decode

    try:
        decimals_hex, symbol_hex = client.batch([
            ("eth_call", [{"to": address, "data": "0x313ce567"}, "latest"]),  # decimals()
            ("eth_call", [{"to": address, "data": "0x95d89b41"}, "latest"]),  # symbol()
        ])
        decimals = abi_decode(["uint8"], bytes.fromhex(decimals_hex[2:]))[0]
        symbol = abi_decode(["string"], bytes.fromhex(symbol_hex[2:]))[0]
        symbol = "".join(ch for ch in symbol if ch.isprintable())[:16] or "?"
    except Exception as exc:  # a token that does not answer (RPC error, bad ABI data): assume 18, flag it
        logger.error("token metadata unreadable for %s: %s", address, exc)
        return "?", 18
    return symbol, decimals


def widest_range(client: RpcClient) -> int | None:
    """The most blocks to ask for now: the serving provider's cap, and the ceiling a timeout left."""
    caps = [cap for cap in (client.block_range_cap(), client.range_ceiling()) if cap is not None]
    return min(caps) if caps else None


def first_range_end(cfg: ChainConfig, client: RpcClient, start: int) -> int:
    """The last block of a fetch's first range from `start`: a few blocks (the density is not known yet), within
    `batch_blocks` and the cap known now. The sync asks for it ahead, in its first run's first batch."""
    return start + min(cfg.batch_blocks, FIRST_CHUNK_BLOCKS, widest_range(client) or FIRST_CHUNK_BLOCKS) - 1


def _narrower(client: RpcClient, exc: RpcError, from_block: int, to_block: int, rules: FetchRules) -> int:
    """The end of the next try after the provider refused [from_block, to_block] (or timed out on it): the cap it
    named or is known by, the range it suggested, or half."""
    blocks = to_block - from_block + 1
    if isinstance(exc, RangeOverCap):  # refused before asking: the cap of the provider whose turn it was
        return from_block + exc.cap - 1
    if isinstance(exc, RangeTimedOut):
        client.range_timed_out(blocks)
        client.count_split(exc.provider, "timeout")
        return from_block + (to_block - from_block) // 2
    client.count_split(exc.provider, "too_big")
    limit = range_limit_in(exc.message) if rules.learn_caps else None
    if limit is not None:
        return from_block + client.learn_block_range(exc.provider, limit, blocks, exc.message) - 1
    end = suggested_range_end(exc.message, from_block) if rules.suggested_ranges else None
    if end is not None and from_block <= end < to_block:
        return end
    return from_block + (to_block - from_block) // 2


def fetch_batch(cfg: ChainConfig, client: RpcClient, from_block: int, to_block: int,
                known_tokens: frozenset[str] | set[str] | None = None, *, rules: FetchRules = RULES,
                hash_from: int | None = None, raw: list[dict] | None = None) -> Batch:
    """Logs of [from_block, to_block], narrowed when the provider refuses its size or times out on it (the batch
    then ends earlier), and never wider than `widest_range`. With `known_tokens`, the metadata of any other token
    an order uses is read too. A range ending below `hash_from` (the first block whose hash the sync keeps) does
    not ask for its last block's hash when no log carries it. `raw`: the range's eth_getLogs answer, asked already
    (a run's first range rides in the batch that asks for the chain id and the head)."""
    while raw is None:
        widest = widest_range(client)
        if widest is not None:
            to_block = min(to_block, from_block + widest - 1)
        try:
            raw = client.get_logs(from_block, to_block, cfg.contracts)
        except RpcError as exc:
            if to_block == from_block:
                raise
            to_block = _narrower(client, exc, from_block, to_block, rules)
        else:
            client.window.answered(client.last_seconds(), len(raw))
    need = set()
    # The range's last block's hash becomes the cursor's; a log of that block carries it already (on a busy
    # chain, nearly always), which saves a round trip per request to a distant provider. Far below the head
    # (a catch-up's empty stretches) no reorg the sync guards against reaches it, and it is not asked for.
    to_hash = next((r["blockHash"].lower() for r in reversed(raw) if int(r["blockNumber"], 16) == to_block), None)
    if to_hash is None and (hash_from is None or to_block >= hash_from or rules.hash_every_range):
        need.add(to_block)
    if any("blockTimestamp" not in r for r in raw):
        need.update(int(r["blockNumber"], 16) for r in raw)
    headers = client.block_headers(sorted(need)) if need else {}
    logs = parse_logs(raw, {cfg.escrow.lower(): "escrow", cfg.arbitrator_pool.lower(): "pool"})
    meta: dict[str, tuple[str, int]] = {}
    for log in logs:
        if log.block_time is None:
            log.block_time = headers[log.block_number]["timestamp"]
        if known_tokens is not None and log.name == "OrderCreated":
            token = log.args["token"]
            if token not in known_tokens and token not in meta:
                meta[token] = read_token_metadata(client, token)
    if to_hash is None and to_block in headers:
        to_hash = headers[to_block]["hash"]
    return Batch(from_block, to_block, to_hash, logs, meta)


def fetch_range(cfg: ChainConfig, client: RpcClient, from_block: int, to_block: int,
                known_tokens: frozenset[str] | set[str] | None = None, *, rules: FetchRules = RULES,
                hash_from: int | None = None, raw: list[dict] | None = None) -> list[Batch]:
    """Consecutive batches covering exactly [from_block, to_block]: `fetch_batch` again after each range the
    provider made it shrink, so a window of ranges in flight has no hole. After a shrink the rest goes in ranges
    as wide as the one that worked: a busy stretch costs one refusal, not one per part. `raw`: the whole range's
    answer, asked already."""
    out, width = [], None
    while from_block <= to_block:
        end = to_block if width is None else min(to_block, from_block + width - 1)
        batch = fetch_batch(cfg, client, from_block, end, known_tokens, rules=rules, hash_from=hash_from, raw=raw)
        raw = None
        out.append(batch)
        if batch.to_block < end:
            width = batch.to_block - batch.from_block + 1
        from_block = batch.to_block + 1
    return out


def next_size(cfg: ChainConfig, batch: Batch, target_logs: int, *, widest: int | None = None,
              empty_growth: int = RULES.empty_growth, current: int | None = None) -> int:
    """Blocks for the next request: about `target_logs` logs at the density just seen, at most `batch_blocks` and
    `widest`, and at most twice the last range: the first blocks after a deployment are often sparse, and one
    request sized on them could return the whole busy history behind them. After a range that returned nothing,
    `empty_growth` times it, or twice `current` (the size in use): growth then compounds over the answers of a
    window (each answers within the same round trip), so an empty stretch reaches the cap in about one round trip
    rather than one per step. Never after an answer holding logs (sizes compounded over a window of sparse answers
    once reached 160 blocks of a busy history, 58,000 logs in one answer), nor after an empty one narrower than
    FAST_GROWTH_BLOCKS."""
    blocks = batch.to_block - batch.from_block + 1
    density = len(batch.logs) / blocks
    wanted = int(target_logs / density) if density else cfg.batch_blocks
    if batch.logs or blocks < FAST_GROWTH_BLOCKS:
        growth = 2 * blocks
    else:
        growth = max(empty_growth * blocks, 2 * (current or 0))
    return max(1, min(cfg.batch_blocks, widest or cfg.batch_blocks, growth, wanted))


def split(batch: Batch, logs_per_part: int) -> list[Batch]:
    """`batch` as consecutive batches of about `logs_per_part` logs, cut between blocks: a range sized on
    sparse blocks can come back with far more logs than wanted, and the parts travel through the pipeline
    one after another instead of as one lump. Each part ends at its last log's block, whose hash that
    log carries; the last part ends where the batch does."""
    logs = batch.logs
    if len(logs) < 2 * logs_per_part:
        return [batch]
    parts, start, frm = [], 0, batch.from_block
    while len(logs) - start >= 2 * logs_per_part:
        end = start + logs_per_part
        block = logs[end - 1].block_number
        while end < len(logs) and logs[end].block_number == block:  # never split a block
            end += 1
        if end == len(logs):
            break
        parts.append(Batch(frm, block, logs[end - 1].block_hash, logs[start:end], batch.token_meta))
        start, frm = end, block + 1
    parts.append(Batch(frm, batch.to_block, batch.to_hash, logs[start:], batch.token_meta))
    return parts


class Prefetcher:
    """A thread fetching consecutive batches of [start, target] ahead of their consumer: up to `in_flight`
    eth_getLogs ranges at once (on a pool of that many threads), handed on strictly in block order, at most
    `depth` × `chunk_logs` logs ahead (bounded memory; an empty batch counts as one log, so a sparse stretch is
    fetched on while the consumer works through a busy one). Iterate it for the batches; an RPC error is raised
    there, after every batch before the failed range (none after it). It stops starting new requests at
    `deadline` (time.monotonic()), after the first one: a run always makes progress. Use as a context manager:
    leaving it stops the threads."""

    def __init__(self, cfg: ChainConfig, client: RpcClient, start: int, target: int, *, deadline: float,
                 known_tokens: set[str], chunk_logs: int | None = None, depth: int = 4, in_flight: int = 1,
                 rules: FetchRules = RULES, hash_from: int | None = None,
                 first: tuple[int, int, list[dict]] | None = None):
        self.cfg, self.client, self.start, self.target = cfg, client, start, target
        self._first = first  # (from, to, answer) of a range asked already: the first range's, if it is that one
        self.rules, self.hash_from = rules, hash_from
        self.deadline, self.known_tokens = deadline, set(known_tokens)
        self.chunk_logs = chunk_logs or CHUNK_LOGS
        self.in_flight = max(1, in_flight)
        self.ahead = depth * self.chunk_logs  # logs fetched and not yet taken by the consumer, at most
        self._queue: queue.Queue = queue.Queue()
        self._queued = 0  # logs in the queue (an empty batch: one)
        self._room = threading.Condition()
        self._stop = threading.Event()
        # The window of ranges asked for, oldest first, and where the next begins: shared by the handing-on
        # thread and the request threads refilling it (`_fill`), under `_lock`.
        self._lock = threading.Lock()
        self._window: deque[Future] = deque()
        self._frm, self._size = start, min(cfg.batch_blocks, FIRST_CHUNK_BLOCKS)  # until the density is known
        self._sized, self._frontier = False, -1  # frontier: the last range the size was taken from
        self._out = 0  # ranges started and not answered
        self._held = 0  # logs answered and not handed on yet (an empty batch: one), as counted in _counted
        self._expected = 0  # logs the latest answer for the furthest blocks brought
        self._counted: dict[Future, int] = {}
        self._closed = self._failed = False
        self._wake = threading.Event()  # a request answered or the consumer took a batch: the window may fill again
        self._pool: ThreadPoolExecutor | None = None
        self._thread = threading.Thread(target=self._run, name=f"fetch-{cfg.key}", daemon=True)

    def __enter__(self) -> "Prefetcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _weight(item) -> int:
        return max(1, len(item.logs)) if isinstance(item, Batch) else 0

    def _put(self, item) -> bool:
        weight = self._weight(item)
        with self._room:
            while self._queued and self._queued + weight > self.ahead:
                if self._stop.is_set():
                    return False
                self._room.wait(0.1)
            self._queued += weight
        self._queue.put(item)
        return True

    def _run(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.in_flight, thread_name_prefix=f"getlogs-{self.cfg.key}")
        try:
            self._hand_on()
        except BaseException as exc:  # handed to the consumer, raised in its thread
            self._queue.put(exc)
            return
        finally:
            with self._lock:
                self._closed = True  # no request starts after this, from any thread
            # Ranges after a failure are dropped unread; those in flight end within the RPC timeout.
            self._pool.shutdown(wait=True, cancel_futures=True)
        self._queue.put(None)

    def _hand_on(self) -> None:
        """Hand the answered ranges on strictly in block order (the oldest range first), filling the window as
        they go. Requests are also refilled by each request as it ends (`_answered`), so this thread only
        waits on the oldest range."""
        while not self._stop.is_set():
            self._wake.clear()  # before looking: a wake-up from here on is not lost
            self._fill()
            with self._lock:
                oldest = self._window[0] if self._window else None
                if oldest is None and self._finished():
                    return
            if oldest is None:  # nothing out, more to fetch: the last answer's thread or the consumer will make room
                self._wake.wait(0.05)
                continue
            if not oldest.done():
                wait([oldest], timeout=1.0)
                continue
            with self._lock:
                self._window.popleft()
                self._held -= self._counted.pop(oldest, 0)
            for batch in oldest.result():
                self.known_tokens.update(batch.token_meta)  # read once, not again by later requests
                for part in split(batch, self.chunk_logs):
                    if not self._put(part):
                        return

    def _finished(self) -> bool:
        """No range will be asked for any more: the target reached, a range failed, or the deadline passed."""
        return (self._frm > self.target or self._failed
                or (self._frm != self.start and time.monotonic() >= self.deadline))

    def _answered(self, future: Future) -> None:
        """A range ended: note what it says (the next ranges' size, the logs now held, a failure), then start
        the next requests from its own thread before it goes back to the pool, which takes the next range at once
        (no thread has to wake up for the slot to be refilled). An error here is raised again by the handing-on
        thread's own `_fill`."""
        if future.cancelled():  # the pool shut down after a failure or a stop: nothing more to start
            return
        with self._lock:
            self._out -= 1
            if future.exception() is not None:
                self._failed = True
                self._wake.set()
                return
            batches = future.result()
            if future in self._window:  # not handed on yet (the handing-on thread may be quicker than this)
                self._counted[future] = weight = sum(self._weight(b) for b in batches)
                self._held += weight
            # The next ranges lie beyond every range asked for: each is sized on the latest answer for the
            # furthest blocks (an earlier range answering late says less about what comes next).
            last = batches[-1]
            if last.from_block > self._frontier:
                self._frontier = last.from_block
                # Logs a request out may bring, at the latest answer's size: counted against the memory bound
                # with those fetched (a dense history: a few ranges out; an empty stretch: the whole window).
                self._expected = len(last.logs)
                fast = (self.client.window.fastest or 0) >= FAST_GROWTH_SECONDS
                self._size = next_size(self.cfg, last, self.chunk_logs, widest=widest_range(self.client),
                                       empty_growth=self.rules.empty_growth if fast else 2,
                                       current=self._size if self._sized and self.rules.compound and fast else None)
                self._sized = True
        try:
            self._fill()
        except Exception:  # noqa: BLE001 - see the docstring
            logger.debug("refilling the %s fetch window failed", self.cfg.key, exc_info=True)
        finally:
            self._wake.set()

    def _fill(self) -> None:
        """Start as many requests as the window allows: one until the chain's density is known, then as many as
        the provider's answers allow (the client's InFlightWindow, up to `in_flight`), each range sized on the
        latest answer and within the cap known now (one may have been learnt meanwhile). Ranges answered behind
        one still in flight wait their turn without holding a request back, within the memory bound (and at most
        WINDOW_RANGES of them: a busy range refused, narrowed and decoded while empty ones answer behind it).
        Nothing starts after a range that failed: what follows it is never applied."""
        started: list[Future] = []
        with self._lock:
            if self._closed or self._failed or self._stop.is_set():
                return
            limit = min(self.in_flight, self.client.window.current()) if self._sized else 1
            while (self._frm <= self.target and self._out < limit and len(self._window) < WINDOW_RANGES
                   and self._held + self._queued + self._out * self._expected < self.ahead
                   and (self._frm == self.start or time.monotonic() < self.deadline)):
                to = min(self._frm + min(self._size, widest_range(self.client) or self._size) - 1, self.target)
                first, self._first = self._first, None
                raw = first[2] if first and first[:2] == (self._frm, to) else None
                future = self._pool.submit(fetch_range, self.cfg, self.client, self._frm, to, self.known_tokens,
                                           rules=self.rules, hash_from=self.hash_from, raw=raw)
                self._window.append(future)
                self._out += 1
                started.append(future)
                self._frm = to + 1
        for future in started:  # outside the lock: a request that has ended already runs its callback here
            future.add_done_callback(self._answered)

    def __iter__(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            with self._room:
                self._queued -= self._weight(item)
                self._room.notify()
            self._wake.set()
            yield item
