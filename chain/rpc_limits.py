"""Providers' rate limits: the answers that mean "slow down", how long to wait, and a budget under the plan's rate."""
from __future__ import annotations

import email.utils
import random
import re
import threading
import time
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
                      r"|block range (is )?too (wide|large|big)|limited to (a )?[\d,]+ (block )?range"
                      r"|too many (results|logs)", re.IGNORECASE)


def _refused_as_too_big(payload: Any, body: Any) -> bool:
    return (isinstance(payload, dict) and payload.get("method") == "eth_getLogs"
            and bool(_TOO_BIG.search(str(body["error"].get("message", "")))))


def _rate_limit_in(payload: Any, body: Any) -> _RateLimited | None:
    """The rate-limit error in a response (for a batch, in any of its items), or None."""
    items = body if isinstance(body, list) else [body]
    for item in items:
        err = item.get("error") if isinstance(item, dict) else None
        if not isinstance(err, dict) or (isinstance(body, dict) and _refused_as_too_big(payload, body)):
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
