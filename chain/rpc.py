"""JSON-RPC access with a primary and a fallback provider per chain, each behind a circuit breaker (RB-07).

The sync's hot path talks plain JSON-RPC (eth_getLogs and friends) through `RpcClient`, never
through web3's per-log formatters. A provider that fails `FAILURE_THRESHOLD` times in a row is
*open* (skipped) for `RESET_SECONDS`; then *half-open*: one trial call decides whether it closes
again. Calls go to the first provider whose breaker allows it, so traffic returns to the primary
by itself once it recovers.
"""
from __future__ import annotations

import itertools
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from backoffice.chain_settings import chain_prefix

logger = logging.getLogger(__name__)

FAILURE_THRESHOLD = 3
RESET_SECONDS = 30.0
_ids = itertools.count(1)


class RpcError(Exception):
    """The node answered with a JSON-RPC error (e.g. a revert): not the provider's fault."""

    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(f"RPC error {code}: {message}")
        self.code, self.message, self.data = code, message, data


class ProviderUnavailable(Exception):
    """Every provider of the chain failed or is open."""


class _TransportError(Exception):
    pass


# Errors meaning "this provider is unwell" rather than "your request is wrong".
_PROVIDER_ERROR_CODES = {-32603, -32005, -32099, 429}
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


@dataclass
class CircuitBreaker:
    threshold: int = FAILURE_THRESHOLD
    reset_seconds: float = RESET_SECONDS
    state: str = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None
    _trial_in_flight: bool = False

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.state == "closed":
            return True
        if self.state == "open" and self.opened_at is not None and now - self.opened_at >= self.reset_seconds:
            self.state = "half_open"
            self._trial_in_flight = False
        if self.state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.state, self.consecutive_failures, self.opened_at, self._trial_in_flight = "closed", 0, None, False

    def record_failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.consecutive_failures += 1
        self._trial_in_flight = False
        if self.state == "half_open" or self.consecutive_failures >= self.threshold:
            self.state, self.opened_at = "open", now


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

    def observe(self, seconds: float) -> None:
        ms = seconds * 1000
        self.latency_ms = ms if self.latency_ms is None else 0.8 * self.latency_ms + 0.2 * ms


class RpcClient:
    """JSON-RPC over HTTP with failover. Thread-safe enough for the sync's one prefetch thread."""

    def __init__(self, chain: str, urls: list[tuple[str, str]], *, timeout: float = 5.0):
        self.chain = chain
        self.providers = [Provider(role, url) for role, url in urls if url]
        if not self.providers:
            raise ProviderUnavailable(f"{chain}: no RPC URL configured (set {chain_prefix(chain)}_RPC_URL).")
        self.timeout = timeout
        self.last_provider: Provider | None = None
        self._local = threading.local()
        self._lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    @property
    def using_fallback(self) -> bool:
        return self.last_provider is not None and self.last_provider is not self.providers[0]

    # ------------------------------------------------------------------ transport
    def _post(self, provider: Provider, payload: Any) -> Any:
        started = time.monotonic()
        try:
            response = self._session.post(provider.url, data=json.dumps(payload),
                                          headers={"Content-Type": "application/json"}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise _TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if response.status_code >= 500 or response.status_code == 429:
            raise _TransportError(f"HTTP {response.status_code}")
        try:
            body = response.json()
        except ValueError:
            raise _TransportError(f"HTTP {response.status_code}: response is not JSON") from None
        provider.observe(time.monotonic() - started)
        return body

    def _dispatch(self, payload: Any) -> Any:
        """Send one payload through the first provider that works; mark breakers on the way."""
        errors = []
        candidates = [p for p in self.providers if p.breaker.allow()] or self.providers[:1]
        for provider in candidates:
            provider.calls += 1
            try:
                body = self._post(provider, payload)
                if (isinstance(body, dict) and "error" in body and body["error"].get("code") in _PROVIDER_ERROR_CODES
                        and not _refused_as_too_big(payload, body)):
                    raise _TransportError(f"provider error {body['error'].get('code')}: "
                                          f"{str(body['error'].get('message'))[:200]}")
            except _TransportError as exc:
                self._failed(provider, str(exc))
                errors.append(f"{provider.role}: {exc}")
                continue
            with self._lock:
                provider.breaker.record_success()
                provider.last_success_at = datetime.now(timezone.utc)
                if self.last_provider is not None and self.last_provider is not provider:
                    logger.warning("RPC %s now served by %s", self.chain, provider.role,
                                   extra={"chain": self.chain, "provider": provider.role})
                self.last_provider = provider
            return body
        raise ProviderUnavailable(f"{self.chain}: every RPC provider failed ({'; '.join(errors) or 'all open'})")

    def _failed(self, provider: Provider, message: str) -> None:
        with self._lock:
            was = provider.breaker.state
            provider.breaker.record_failure()
            provider.failures += 1
            provider.last_error = message
            provider.last_failure_at = datetime.now(timezone.utc)
            if provider.breaker.state == "open" and was != "open":
                provider.opened_wall = provider.last_failure_at
                logger.error("RPC %s %s circuit opened: %s", self.chain, provider.role, message,
                             extra={"chain": self.chain, "provider": provider.role})

    # ------------------------------------------------------------------ API
    def call(self, method: str, params: list[Any]) -> Any:
        body = self._dispatch({"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params})
        if "error" in body:
            err = body["error"]
            raise RpcError(err.get("code", 0), str(err.get("message", "")), err.get("data"))
        return body.get("result")

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """One HTTP request for many calls; results in the order given. Raises RpcError on any error."""
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        body = self._dispatch(payload)
        if not isinstance(body, list):
            err = body.get("error", {}) if isinstance(body, dict) else {}
            raise RpcError(err.get("code", 0), str(err.get("message", "batch refused")))
        by_id = {item.get("id"): item for item in body}
        out = []
        for i in range(len(calls)):
            item = by_id.get(i)
            if item is None or "error" in item:
                err = (item or {}).get("error", {"code": 0, "message": "missing response"})
                raise RpcError(err.get("code", 0), str(err.get("message", "")), err.get("data"))
            out.append(item["result"])
        return out

    def chain_id(self) -> int:
        return int(self.call("eth_chainId", []), 16)

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber", []), 16)

    def get_logs(self, from_block: int, to_block: int, addresses: list[str]) -> list[dict]:
        return self.call("eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block),
                                          "address": addresses}])

    def block_headers(self, numbers: list[int]) -> dict[int, dict]:
        """{number: {"hash", "timestamp"}} for the given blocks, in one batched request."""
        results = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        out = {}
        for n, block in zip(numbers, results):
            if block is None:
                raise RpcError(0, f"block {n} not found")
            out[n] = {"hash": block["hash"].lower(), "timestamp": int(block["timestamp"], 16)}
        return out

    def eth_call(self, to: str, data: str, block: int | str = "latest", sender: str | None = None) -> str:
        tx = {"to": to, "data": data}
        if sender:
            tx["from"] = sender
        return self.call("eth_call", [tx, hex(block) if isinstance(block, int) else block])

    def snapshot(self) -> list[dict[str, Any]]:
        """Provider states for the admin and metrics (no credentials)."""
        return [{
            "role": p.role, "url": redact_url(p.url), "state": p.breaker.state,
            "consecutive_failures": p.breaker.consecutive_failures, "latency_ms": p.latency_ms,
            "calls": p.calls, "failures": p.failures, "last_error": p.last_error,
            "last_success_at": p.last_success_at, "last_failure_at": p.last_failure_at,
            "opened_at": p.opened_wall if p.breaker.state != "closed" else None,
            "in_use": p is self.last_provider,
        } for p in self.providers]


_clients: dict[str, RpcClient] = {}
_clients_lock = threading.Lock()


def get_client(chain: str) -> RpcClient:
    """The process-wide client of a chain; its breakers persist across sync runs in a worker."""
    from django.conf import settings

    from .config import get_chain_config

    cfg = get_chain_config(chain)
    key = (cfg.rpc_url, cfg.rpc_fallback)
    with _clients_lock:
        client = _clients.get(chain)
        if client is None or (client.providers[0].url, getattr(client, "_fallback_url", "")) != key:
            client = RpcClient(chain, [("primary", cfg.rpc_url), ("fallback", cfg.rpc_fallback)],
                               timeout=settings.RPC_TIMEOUT_SECONDS)
            client._fallback_url = cfg.rpc_fallback
            _clients[chain] = client
        return client


def reset_clients() -> None:
    with _clients_lock:
        _clients.clear()
