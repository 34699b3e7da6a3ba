"""One RPC provider's state in a client: its breaker, latency, request budget, eth_getLogs block cap, rate-limit
pause and the counters the sync saves (chain.rpc)."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from .rpc_breaker import CircuitBreaker
from .rpc_limits import RangeCap, TokenBucket


def redact_url(url: str) -> str:
    """Hide credentials and path/query API keys: providers put keys in both."""
    if not url:
        return ""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    path = "/…" if parts.path.strip("/") else ""
    return urlunsplit((parts.scheme, netloc, path, "", ""))


# Per-provider counters, persisted by the sync into chain_rpc_providers (columns of the same names).
COUNTERS = ("rate_limited", "rate_limit_wait_seconds", "budget_wait_seconds", "getlogs_splits_too_big",
            "getlogs_splits_timeout")


@dataclass
class Provider:
    role: str
    url: str
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    latency_ms: float | None = None
    calls: int = 0
    failures: int = 0
    last_error: str = ""
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    opened_wall: datetime | None = None
    budget: TokenBucket = field(default_factory=lambda: TokenBucket(0))
    range_cap: RangeCap = field(default_factory=RangeCap)  # the widest eth_getLogs it answers
    resume_at: float = 0.0  # time.monotonic() before which it asked not to be called (rate limit)
    passed_over_until: float = 0.0  # a call gave up waiting for it: later calls go to the next provider until then
    # What the environment says for its URL (proxies, CA bundle, ~/.netrc), read once: `RpcClient._http`.
    http_settings: dict | None = None
    # Counters for /metrics, cumulative in this process; `RpcClient.take_counts` hands out what is new.
    counts: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    _taken: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def observe(self, seconds: float) -> None:
        ms = seconds * 1000
        self.latency_ms = ms if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * ms
