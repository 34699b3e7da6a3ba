"""JSON-RPC access with a primary and a fallback provider per chain, each behind a circuit breaker (RB-07).

The sync's hot path talks plain JSON-RPC (eth_getLogs and friends) through `RpcClient`, never
through web3's per-log formatters. A provider that fails `FAILURE_THRESHOLD` times in a row is
*open* (skipped) for `RESET_SECONDS`; then *half-open*: one trial call decides whether it closes
again (chain.rpc_breaker). Calls go to the first provider whose breaker allows it, so traffic returns
to the primary by itself once it recovers.

Paid providers cap request rates. A rate-limit answer (HTTP 429, or a JSON-RPC error such as -32005
"limit exceeded", Alchemy's 429 "compute units per second", QuickNode's -32007/-32012) is the
provider asking us to slow down, not failing: the client waits (`Retry-After`, Infura's
`backoff_seconds`, else exponential backoff with jitter), every thread holding off the same provider,
and tries again; the breaker is not touched. Only a wait beyond `rate_limit_max_wait` moves the call
to the next provider. A per-provider token bucket (`<CHAIN>_RPC_MAX_RPS`) keeps us under the plan's
rate in the first place (the answers, the waits and the bucket: chain.rpc_limits). A wide eth_getLogs
that times out raises `RangeTimedOut` (an RpcError), so the sync halves the range as it does for a
refusal of its size, instead of failing the provider. Each provider has its own eth_getLogs block cap
(configured, or learnt from a refusal that names it: `learn_block_range`); a range wider than the cap of the
provider whose turn it is raises `RangeOverCap` without a request, so a fallback with a smaller cap than the
primary's is asked for what it answers.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

import requests
import urllib3

from backoffice.chain_settings import chain_prefix

from .rpc_errors import ProviderUnavailable, RangeOverCap, RangeTimedOut, RpcError
from .rpc_limits import (
    InFlightWindow,
    RangeCap,
    TokenBucket,
    _rate_limit_in,
    _RateLimited,
    backoff_seconds,
    retry_after_seconds,
)
from .rpc_provider import COUNTERS, Provider, redact_url

logger = logging.getLogger(__name__)

MIN_RATE_LIMIT_WAIT = 0.1  # the shortest wait after a rate-limit answer, whatever it asks
# How long an eth_getLogs width that timed out caps the following requests before a wider one is tried again.
RANGE_CEILING_SECONDS = 300.0
_ids = itertools.count(1)


def logs_call(from_block: int, to_block: int, addresses: list[str]) -> tuple[str, list[Any]]:
    """The eth_getLogs call for the contracts' logs of [from_block, to_block], as (method, params)."""
    return "eth_getLogs", [{"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": addresses}]


class _TransportError(Exception):
    pass


# Errors meaning "this provider is unwell" rather than "your request is wrong".
_PROVIDER_ERROR_CODES = {-32603, -32099}


def _getlogs_blocks(payload: Any) -> int:
    """Blocks an eth_getLogs payload spans, the widest one's in a batch (0 for anything else)."""
    if isinstance(payload, list):
        return max(map(_getlogs_blocks, payload), default=0)
    if not (isinstance(payload, dict) and payload.get("method") == "eth_getLogs"):
        return 0
    try:
        query = payload["params"][0]
        return int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
    except (KeyError, IndexError, TypeError, ValueError):
        return 0


class RpcClient:
    """JSON-RPC over HTTP with failover, rate-limit waits and a request budget. Thread-safe: the sync's
    fetch threads share one client (each thread has its own HTTP session)."""

    def __init__(self, chain: str, urls: list[tuple[str, str]], *, timeout: float = 5.0, max_rps: float = 0.0,
                 rate_limit_max_wait: float = 30.0, budget_setting: str = "",
                 max_block_ranges: dict[str, int] | None = None, max_in_flight: int = 4):
        self.chain = chain
        caps = max_block_ranges or {}
        self.providers = [Provider(role, url, budget=TokenBucket(max_rps), range_cap=RangeCap(caps.get(role, 0)))
                          for role, url in urls if url]
        if not self.providers:
            raise ProviderUnavailable(f"{chain}: no RPC URL configured (set {chain_prefix(chain)}_RPC_URL).")
        self.timeout = timeout
        self.rate_limit_max_wait = rate_limit_max_wait
        self.budget_setting = budget_setting or f"{chain.upper()}_RPC_MAX_RPS"
        self.last_provider: Provider | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._range_ceiling: tuple[int, float] | None = None  # (blocks, until time.monotonic())
        self.window = InFlightWindow(max_in_flight)  # eth_getLogs a catch-up keeps in flight

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            # The environment is read once per provider (`_http`), not on every request: requests would stat
            # ~/.netrc and parse the proxy variables each time, about half a millisecond of the interpreter per
            # call, which a dozen fetch threads share.
            session.trust_env = False
        return session

    @staticmethod
    def _http(provider: Provider) -> dict:
        """The proxies, CA bundle and ~/.netrc credentials the environment gives the provider's URL, as requests
        would apply them to each request (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, …); read at the first call."""
        if provider.http_settings is None:
            with requests.Session() as probe:
                found = probe.merge_environment_settings(provider.url, {}, None, None, None)
            found["auth"] = requests.utils.get_netrc_auth(provider.url)
            provider.http_settings = found
        return provider.http_settings

    @property
    def using_fallback(self) -> bool:
        return self.last_provider is not None and self.last_provider is not self.providers[0]

    # ------------------------------------------------------------------ transport
    def _post(self, provider: Provider, payload: Any) -> Any:
        started = time.monotonic()
        try:
            # The body is read in one call (`stream=True`, then `raw.read()`): requests' own `.content` reads it
            # 10 KB at a time, and each read gives the interpreter up and waits to get it back behind the threads
            # decoding and folding, about half a millisecond each: a 7 MB answer took 141 ms instead of 8 with one
            # such thread busy (the catchup benchmark's busy ranges are such answers).
            response = self._session.post(provider.url, data=json.dumps(payload),
                                          headers={"Content-Type": "application/json"}, timeout=self.timeout,
                                          **{**self._http(provider), "stream": True})
            content = response.raw.read(decode_content=True)
        except (requests.ReadTimeout, urllib3.exceptions.ReadTimeoutError):
            blocks = _getlogs_blocks(payload)
            if blocks > 1:
                raise RangeTimedOut(blocks, self.timeout, provider.role) from None
            raise _TransportError(f"ReadTimeout: no answer in {self.timeout:g} s") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _TransportError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        try:
            body = json.loads(content)
        except ValueError:
            body = None
        if response.status_code == 429:
            limited = _rate_limit_in(payload, body) if body is not None else None
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise _RateLimited(f"HTTP 429{': ' + str(limited) if limited else ''}",
                               retry_after if retry_after is not None else limited and limited.retry_after)
        if response.status_code >= 500:
            raise _TransportError(f"HTTP {response.status_code}")
        if body is None:
            raise _TransportError(f"HTTP {response.status_code}: response is not JSON")
        limited = _rate_limit_in(payload, body)
        if limited is not None:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            if retry_after is not None:
                limited.retry_after = retry_after
            try:
                raise limited
            finally:
                del limited  # no cycle between this frame and the traceback (see `call`)
        self._local.seconds = time.monotonic() - started
        provider.observe(self._local.seconds)
        return body

    def _dispatch(self, payload: Any) -> Any:
        """Send one payload through the first provider that works; mark breakers on the way.

        A provider's breaker is asked only when its turn comes (asking claims a half-open trial, which a
        provider never tried would hold for good), and a provider that made this call give up waiting out its
        rate limit is passed over by the calls that follow for RPC_RATE_LIMIT_MAX_WAIT_SECONDS: a spent daily
        quota costs one call the wait, not every call."""
        errors: list[str] = []
        tokens = len(payload) if isinstance(payload, list) else 1  # providers count each call of a batch
        deadline = time.monotonic() + self.rate_limit_max_wait
        tried = False
        for provider in self.providers:
            now = time.monotonic()
            if provider.passed_over_until > now:
                errors.append(f"{provider.role}: rate limited, passed over for "
                              f"{provider.passed_over_until - now:.0f} s")
                continue
            with self._lock:
                allowed = provider.breaker.allow()
            if not allowed:
                continue
            tried = True
            body = self._try(provider, payload, tokens, deadline, errors)
            if body is not None:
                return body
        if not tried and not errors:  # every breaker open: the primary gets a call rather than none
            body = self._try(self.providers[0], payload, tokens, deadline, errors)
            if body is not None:
                return body
        hint = ""
        if any("rate limited" in e for e in errors):
            hint = (f" The providers keep asking to slow down: set {self.budget_setting} below the plan's "
                    f"requests per second, or raise RPC_RATE_LIMIT_MAX_WAIT_SECONDS.")
        raise ProviderUnavailable(f"{self.chain}: every RPC provider failed ({'; '.join(errors) or 'all open'}).{hint}")

    def _try(self, provider: Provider, payload: Any, tokens: int, deadline: float, errors: list[str]) -> Any:
        """The body from `provider`, waiting out its rate limits until `deadline`; None (and a line in
        `errors`) when it failed or would make the call wait longer."""
        blocks = _getlogs_blocks(payload)
        cap = provider.range_cap.blocks() if blocks > 1 else None
        if cap is not None and blocks > cap:  # this provider would refuse it: say so without asking
            with self._lock:
                provider.breaker.release_trial()
            raise RangeOverCap(blocks, cap, provider.role)
        attempt = 0
        while True:
            pause = provider.resume_at - time.monotonic()
            if pause > 0:
                if time.monotonic() + pause > deadline:  # longer than we may wait: the next provider
                    with self._lock:
                        provider.breaker.release_trial()
                        provider.passed_over_until = time.monotonic() + self.rate_limit_max_wait
                    errors.append(f"{provider.role}: rate limited for {pause:.1f} s more")
                    return None
                time.sleep(pause)
                self._count(provider, "rate_limit_wait_seconds", pause)
            waited = provider.budget.acquire(tokens)
            if waited:
                self._count(provider, "budget_wait_seconds", waited)
            with self._lock:
                provider.calls += 1
            try:
                body = self._post(provider, payload)
                if isinstance(body, dict) and "error" in body and body["error"].get("code") in _PROVIDER_ERROR_CODES:
                    raise _TransportError(f"provider error {body['error'].get('code')}: "
                                          f"{str(body['error'].get('message'))[:200]}")
            except _RateLimited as exc:
                self._rate_limited(provider, exc, attempt)
                attempt += 1
                continue
            except RangeTimedOut:
                with self._lock:
                    provider.breaker.release_trial()
                raise
            except _TransportError as exc:
                self._failed(provider, str(exc))
                errors.append(f"{provider.role}: {exc}")
                return None
            with self._lock:
                provider.breaker.record_success()
                provider.passed_over_until = 0.0
                provider.last_success_at = datetime.now(timezone.utc)
                if self.last_provider is not None and self.last_provider is not provider:
                    logger.warning("RPC %s now served by %s", self.chain, provider.role,
                                   extra={"chain": self.chain, "provider": provider.role})
                self.last_provider = provider
            self._local.served_by = provider.role
            return body

    def _rate_limited(self, provider: Provider, exc: _RateLimited, attempt: int) -> None:
        """Hold every thread off this provider for the time it asks (or the backoff); not a failure."""
        # "Retry-After: 0" (or a date gone by) answered again and again must not become a busy loop: at least
        # the backoff's first step, so the call's wait limit is reached in time.
        delay = max(exc.retry_after if exc.retry_after is not None else backoff_seconds(attempt), MIN_RATE_LIMIT_WAIT)
        with self._lock:
            provider.resume_at = max(provider.resume_at, time.monotonic() + delay)
            provider.counts["rate_limited"] += 1
            provider.last_error = str(exc)[:300]
        self.window.rate_limited()
        logger.warning("RPC %s %s rate limited, waiting %.2f s: %s", self.chain, provider.role, delay, exc,
                       extra={"chain": self.chain, "provider": provider.role})

    def _count(self, provider: Provider, counter: str, amount: float = 1) -> None:
        with self._lock:
            provider.counts[counter] += amount

    def last_seconds(self) -> float:
        """How long this thread's last answered request took (the HTTP exchange alone)."""
        return getattr(self._local, "seconds", 0.0)

    def range_ceiling(self) -> int | None:
        """The widest eth_getLogs (in blocks) to ask for now: half of the narrowest range that timed out in the
        last RANGE_CEILING_SECONDS, or None. Shared by the sync's fetch threads, so a provider that cannot
        answer wide ranges costs one timeout per halving, not one per range in flight or per remaining range."""
        with self._lock:
            return self._live_ceiling()

    def range_timed_out(self, blocks: int) -> None:
        """An eth_getLogs over `blocks` blocks timed out: cap the following requests at half of it."""
        cap = max(1, blocks // 2)
        with self._lock:
            live = self._live_ceiling()
            self._range_ceiling = (cap if live is None else min(cap, live), time.monotonic() + RANGE_CEILING_SECONDS)

    def _live_ceiling(self) -> int | None:
        """The ceiling while it lasts (call under self._lock)."""
        if self._range_ceiling is None or self._range_ceiling[1] <= time.monotonic():
            return None
        return self._range_ceiling[0]

    def _provider(self, role: str | None) -> Provider:
        return next((p for p in self.providers if p.role == role), self.providers[0])

    def count_split(self, role: str | None, reason: str) -> None:
        """An eth_getLogs range halved because the provider refused its size (`too_big`) or timed out."""
        self._count(self._provider(role), f"getlogs_splits_{reason}")

    def block_range_cap(self) -> int | None:
        """The most blocks the provider serving the chain now answers in one eth_getLogs, or None when no cap is
        known. A call that goes to another provider is held to that one's cap (RangeOverCap)."""
        return (self.last_provider or self.providers[0]).range_cap.blocks()

    def learn_block_range(self, role: str | None, limit: int, refused_blocks: int, refusal: str) -> int:
        """The provider `role` refused `refused_blocks` blocks naming its limit: that limit is its cap from now on (for
        rpc_limits.LEARNT_RANGE_SECONDS, in every run of this process), never below one block. Returns the cap."""
        provider = self._provider(role)
        with self._lock:
            before = provider.range_cap.blocks()
            cap = provider.range_cap.learn(limit, refused_blocks, refusal)
        if cap != before:
            logger.warning("RPC %s %s answers eth_getLogs over at most %d blocks, as its refusal says: %s", self.chain,
                           provider.role, cap, refusal[:200], extra={"chain": self.chain, "provider": provider.role})
        return cap

    def take_counts(self) -> dict[str, dict[str, float]]:
        """Per provider role, what the counters gained since the last take (to add to the stored totals:
        several worker processes each add their own, and none overwrites another's)."""
        out = {}
        with self._lock:
            for p in self.providers:
                out[p.role] = {k: p.counts[k] - p._taken[k] for k in COUNTERS}
                p._taken = dict(p.counts)
        return out

    def give_back_counts(self, counts: dict[str, dict[str, float]]) -> None:
        """Counts taken (`take_counts`) that could not be saved: the next take hands them out again."""
        with self._lock:
            for p in self.providers:
                for k, v in counts.get(p.role, {}).items():
                    p._taken[k] -= v

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
            # Raised as it is made, never held in a local: the frame holding it would form a cycle with its
            # traceback, and keep every caller's frame (a catch-up's fetched batches) alive until the collector
            # next runs, which a sync run pauses.
            raise RpcError(err.get("code", 0), str(err.get("message", "")), err.get("data"),
                           provider=getattr(self._local, "served_by", None))
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
        return self.call(*logs_call(from_block, to_block, addresses))

    def latest_block(self) -> tuple[int, int]:
        """(number, timestamp) of the newest block, in one request: the head, and the chain's clock."""
        block = self.call("eth_getBlockByNumber", ["latest", False])
        try:
            return int(block["number"], 16), int(block["timestamp"], 16)
        except (KeyError, TypeError, ValueError):
            raise RpcError(0, "the newest block has no number or timestamp") from None

    def block_headers(self, numbers: list[int]) -> dict[int, dict]:
        """{number: {"hash", "timestamp"}} for the given blocks, in one batched request."""
        results = self.batch([("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        out = {}
        for n, block in zip(numbers, results, strict=True):
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
            "max_block_range": p.range_cap.blocks(), "max_block_range_source": p.range_cap.source(),
            "max_block_range_learnt_at": p.range_cap.learnt_at if p.range_cap.source() == "learnt" else None,
            "max_block_range_refusal": p.range_cap.refusal if p.range_cap.source() == "learnt" else "",
        } for p in self.providers]


_clients: dict[str, RpcClient] = {}
_clients_lock = threading.Lock()


def get_client(chain: str) -> RpcClient:
    """The process-wide client of a chain; its breakers persist across sync runs in a worker."""
    from django.conf import settings

    from .config import get_chain_config

    cfg = get_chain_config(chain)
    key = (cfg.rpc_url, cfg.rpc_fallback, cfg.max_rps, cfg.max_block_range, cfg.fallback_max_block_range,
           cfg.max_in_flight)
    with _clients_lock:
        client = _clients.get(chain)
        if client is None or getattr(client, "_key", None) != key:
            short = settings.CHAINS[chain].get("short", chain).upper()
            client = RpcClient(chain, [("primary", cfg.rpc_url), ("fallback", cfg.rpc_fallback)],
                               timeout=settings.RPC_TIMEOUT_SECONDS, max_rps=cfg.max_rps,
                               rate_limit_max_wait=settings.RPC_RATE_LIMIT_MAX_WAIT_SECONDS,
                               budget_setting=f"{short}_RPC_MAX_RPS",
                               max_block_ranges={"primary": cfg.max_block_range,
                                                 "fallback": cfg.fallback_max_block_range},
                               max_in_flight=cfg.max_in_flight)
            client._key = key
            _clients[chain] = client
        return client


def clients() -> list[tuple[str, RpcClient]]:
    """This process's clients, by chain."""
    with _clients_lock:
        return list(_clients.items())


def reset_clients() -> None:
    with _clients_lock:
        _clients.clear()


def _forget_clients_after_fork() -> None:
    """A forked process (Celery's prefork pool: the parent may have read a chain in its system checks) starts with
    no client: each holds its thread's HTTP connection, and two processes reading one socket get each other's answers
    (seen: a batch's answer to a single eth_blockNumber). The lock too: a thread may have held it at the fork."""
    global _clients_lock
    _clients_lock = threading.Lock()
    _clients.clear()


os.register_at_fork(after_in_child=_forget_clients_after_fork)
