"""Providers' limits: the answers that mean "slow down", how long to wait, a budget under the plan's rate, and the
widest eth_getLogs each provider answers (configured, or read from its refusal)."""
from __future__ import annotations

import email.utils
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

# Backoff after a rate-limit answer without Retry-After: 0.25 s, 0.5 s, 1 s ... at most 8 s, each drawn between
# half and all of it, so the sync's parallel requests do not come back in lockstep.
BACKOFF_BASE_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 8.0


class _RateLimited(Exception):
    def __init__(self, message: str, retry_after: float | None):
        super().__init__(message)
        self.retry_after = retry_after


# Errors meaning "slow down": EIP-1474's -32005 "limit exceeded" (Infura: "project ID request rate exceeded",
# "daily request count exceeded, request rate limited"), 429 in the body (Alchemy: "Your app has exceeded its
# compute units per second capacity"), QuickNode's -32007 "15/second request limit reached" and -32012 "credits
# limited to 6000/sec", -32016 "over rate limit", -32029 "Too Many Requests"; other codes by their wording
# (-32000 "429 Too Many Requests: ...").
_RATE_LIMIT_CODES = {-32005, 429, -32007, -32012, -32016, -32029}
_RATE_LIMITED = re.compile(r"rate.?limit|too many requests|request limit|limit (exceeded|reached)|credits limited"
                           r"|exceeded its compute units|request rate exceeded|request count exceeded", re.IGNORECASE)
# ... except an eth_getLogs refused for its size, which providers send under those codes too (Infura: -32005
# "query returned more than 10000 results"): it comes back as RpcError, so the sync halves its range instead of
# failing over and tripping the breaker. Only wording about a size limit counts ("block range" alone may be an
# outage: "failed to fetch logs for block range …: upstream timeout").
_TOO_BIG = re.compile(r"more than [\d,]+ results|log response size exceeded|exceed(s|ed)? (the )?max(imum)? block range"
                      r"|block range (is )?(too (wide|large|big|high)|(bigger|larger|greater) than)"
                      r"|block range limit exceeded|range is too large|limited to (a )?[\d,]+ (block )?range"
                      r"|too many (results|logs|blocks)|query exceeds max results|backend response too large"
                      r"|logs matched by query exceeds limit", re.IGNORECASE)

# A refusal for range size that names the provider's limit, in each provider's words (group n: the number, k: a
# "K" for thousands). Only wording about blocks: "credits limited to 6000/sec" is a rate limit, and "more than 10000
# results" (Infura) or "logs matched by query exceeds limit of 10000" (Arbitrum) count logs, not blocks.
_N = r"(?P<n>\d[\d,]*)\s?(?P<k>k\b)?"
_RANGE_LIMITS = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    rf"limited to (an? )?{_N} (blocks? )?range",  # QuickNode "eth_getLogs is limited to a 10,000 range", 1RPC, Blast
    rf"limited to {_N} blocks?\b",  # BlockPI "limited to 1024 block range"
    rf"up to an? {_N}[ -]block range",  # Alchemy "with up to a 500 block range", "up to a 2K block range"
    rf"max(imum)? block range\s?[:=]?\s?{_N}",  # BSC's nodes "exceed maximum block range: 5000", geth forks
    rf"\brange \d[\d,]* exceeds limit of {_N}",  # Infura "range 1000000 exceeds limit of 10000"
    rf"blocks distance:?\s?{_N}",  # Ankr "maximum [from, to] blocks distance: 10000"
    rf"too wide \(max(imum)? {_N}\)",  # Frontier (Moonbeam) "block range is too wide (maximum 1024)"
    rf"maximum is set to {_N}",  # Avalanche "requested too many blocks from 0 to 90000, maximum is set to 2048"
    rf"max range:?\s?{_N}",  # Cloudflare "Max range: 800"
    rf"maximum allowed number of requested blocks is {_N}",  # thirdweb
    rf"range allowed for your plan \(\d+ > {_N}\)",  # Blast "exceeds the range allowed for your plan (10001 > 5000)"
    rf"limit the query to at most {_N} blocks",  # Coinbase "please limit the query to at most 10000 blocks"
    rf"block range greater than {_N} max",  # "block range greater than 10000 max"
    rf"block range exceeds {_N}",  # "block range exceeds 1000"
    rf"range is too large, max is {_N} blocks",  # "eth_getLogs range is too large, max is 10k blocks"
    rf"smaller than size {_N}",  # Harmony "query must be smaller than size 1024"
))
# A refusal that says which range would do (Infura "Try with this block range [0x10, 0x2f]", Alchemy "this block
# range should work: [0x10, 0x2f]"): the end of the range to ask for instead.
_SUGGESTED = re.compile(r"(try with this block range|this block range should work):?\s*"
                        r"\[\s*(?P<a>0x[0-9a-f]+),\s*(?P<b>0x[0-9a-f]+)\s*\]", re.IGNORECASE)


def range_limit_in(message: str) -> int | None:
    """The provider's eth_getLogs block limit named in a refusal (10000 for "limited to a 10,000 range", 2000 for
    "up to a 2K block range"), or None when the message names none."""
    for pattern in _RANGE_LIMITS:
        match = pattern.search(message)
        if match:
            return int(match["n"].replace(",", "")) * (1000 if match["k"] else 1)
    return None


def suggested_range_end(message: str, from_block: int) -> int | None:
    """The last block of the range a refusal suggests from `from_block` on, or None."""
    match = _SUGGESTED.search(message)
    if match is None or int(match["a"], 16) != from_block:
        return None
    return int(match["b"], 16)


def _refused_as_too_big(payload: Any, body: Any) -> bool:
    if not (isinstance(payload, dict) and payload.get("method") == "eth_getLogs"):
        return False
    message = str(body["error"].get("message", ""))
    return bool(_TOO_BIG.search(message)) or range_limit_in(message) is not None


def _rate_limit_in(payload: Any, body: Any) -> _RateLimited | None:
    """The rate-limit error in a response (for a batch, in any of its items), or None. An eth_getLogs refused for
    its size is not one, alone or in a batch (Infura's -32005 is both)."""
    items = body if isinstance(body, list) else [body]
    calls = {c.get("id"): c for c in payload if isinstance(c, dict)} if isinstance(payload, list) else {}
    for item in items:
        err = item.get("error") if isinstance(item, dict) else None
        call = calls.get(item.get("id")) if isinstance(body, list) and isinstance(item, dict) else payload
        if not isinstance(err, dict) or _refused_as_too_big(call, item):
            continue
        message = str(err.get("message", ""))
        if err.get("code") == 3 or "revert" in message.lower():  # a contract's own words ("daily limit exceeded")
            continue
        if err.get("code") in _RATE_LIMIT_CODES or _RATE_LIMITED.search(message):
            data = err.get("data")
            backoff = data.get("backoff_seconds") if isinstance(data, dict) else None  # Infura's hint
            return _RateLimited(f"rate limited ({err.get('code')}: {message[:200]})",
                                float(backoff) if isinstance(backoff, (int, float)) else None)
    return None


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds: either form RFC 9110 allows (delay-seconds or an HTTP date)."""
    if not value or not value.strip():
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def backoff_seconds(attempt: int) -> float:
    """Exponential backoff with jitter for the `attempt`-th rate-limit answer in a row (0-based)."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** attempt)
    return random.uniform(ceiling / 2, ceiling)


class TokenBucket:
    """At most `rate` requests per second, thread-safe; `rate` 0 is unlimited.

    Each caller reserves its tokens at once (the balance may go negative) and sleeps off the debt outside
    the lock: threads are served in arrival order, and a batch costing more than the bucket holds still
    passes. The bucket holds one token, so no burst ever exceeds the rate (providers count per second)."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()
        self._lock = threading.Lock()

    def acquire(self, tokens: float = 1.0) -> float:
        """Take `tokens`, waiting as long as the rate requires; returns the seconds waited."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate) - tokens
            self._at = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)
        return wait


# A cap read from a refusal holds this long: a plan upgraded is found again within the hour, for one refused request.
LEARNT_RANGE_SECONDS = 3600.0


@dataclass
class RangeCap:
    """The most blocks one provider answers in one eth_getLogs: configured (<PREFIX>_RPC_MAX_BLOCK_RANGE), or learnt
    from a refusal that named it, whichever is lower. Not thread-safe: the client holds its lock."""

    configured: int = 0  # 0: none
    learnt: int = 0  # 0: none (or expired)
    learnt_until: float = 0.0  # time.monotonic()
    learnt_at: datetime | None = None
    refusal: str = ""  # the provider's words

    def _live(self, now: float | None = None) -> int:
        return self.learnt if self.learnt and (time.monotonic() if now is None else now) < self.learnt_until else 0

    def blocks(self, now: float | None = None) -> int | None:
        """The cap in blocks, or None when none is known."""
        caps = [cap for cap in (self.configured, self._live(now)) if cap]
        return min(caps) if caps else None

    def source(self, now: float | None = None) -> str:
        live = self._live(now)
        if live and (not self.configured or live < self.configured):
            return "learnt"
        return "configured" if self.configured else ""

    def learn(self, limit: int, refused_blocks: int, refusal: str, now: float | None = None) -> int:
        """A refusal of `refused_blocks` blocks named `limit`: the cap becomes that, never below one block, and
        always narrower than the range refused (a limit counted another way, "500" meaning fewer than 500, must not
        bring the same refusal back). Returns the cap now in force."""
        now = time.monotonic() if now is None else now
        cap = max(1, limit)
        if cap >= refused_blocks:
            cap = max(1, refused_blocks - 1)
        live = self._live(now)
        self.learnt = min(cap, live) if live else cap
        self.learnt_until = now + LEARNT_RANGE_SECONDS
        self.learnt_at = datetime.now(timezone.utc)
        self.refusal = refusal[:300]
        return self.blocks(now)


class InFlightWindow:
    """How many eth_getLogs a catch-up keeps in flight: between 1 and `ceiling` (<PREFIX>_SYNC_MAX_IN_FLIGHT),
    following what the provider answers. TCP Vegas's rule, on light answers only (a heavy answer's time is its size,
    not the provider's queue): from the fastest light answer lately and this one, `size × (1 − fastest / this)` of
    our requests were waiting at the provider. Fewer than ALPHA: one more in flight (while below the threshold a
    rate limit left; half of one per window above it). More than BETA: the provider serves them one after another,
    one fewer. A rate-limit answer halves the window, once per QUIET_SECONDS (a burst's answers come together) and
    no growth meanwhile. Heavy answers (a busy stretch, where the CPU rather than the latency sets the pace, and
    each request in flight holds thousands of logs) take it back towards START, one request per window of them: a
    dense history settles at 4 in flight, as before, while a busy hour inside a sparse history barely moves it.
    Thread-safe; the chain's client keeps it from one run to the next."""

    START = 4
    LIGHT_LOGS = 500
    ALPHA, BETA = 2.0, 4.0
    QUIET_SECONDS = 1.0
    DRIFT = 0.02  # how fast "the fastest lately" follows slower answers (a provider grown slower for good)

    def __init__(self, ceiling: int, start: int = START):
        self.ceiling = max(1, ceiling)
        self.size = self.dense = float(min(max(1, start), self.ceiling))
        self.threshold = float(self.ceiling)
        self.fastest: float | None = None
        self.quiet_until = 0.0
        self.halvings = 0
        self._lock = threading.Lock()

    def current(self) -> int:
        return max(1, min(self.ceiling, int(self.size)))

    def answered(self, seconds: float, logs: int, now: float | None = None) -> None:
        """An eth_getLogs answered `logs` logs in `seconds` (the HTTP exchange alone, no wait before it)."""
        if seconds <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            if logs > self.LIGHT_LOGS:
                self.size = max(min(self.size, self.dense), self.size - 1 / self.size)
                return
            fastest = self.fastest = seconds if self.fastest is None else min(
                seconds, self.fastest + (seconds - self.fastest) * self.DRIFT)
            queued = self.size * (1 - fastest / seconds)
            if queued > self.BETA:
                self.size = max(1.0, self.size - 1)
                self.threshold = min(self.threshold, self.size)
            elif queued < self.ALPHA and now >= self.quiet_until:
                self.size = min(float(self.ceiling), self.size + (1 if self.size < self.threshold else 1 / self.size))

    def rate_limited(self, now: float | None = None) -> None:
        """The provider asked us to slow down."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if now < self.quiet_until:
                return
            self.size = self.threshold = max(1.0, self.size / 2)
            self.quiet_until = now + self.QUIET_SECONDS
            self.halvings += 1
