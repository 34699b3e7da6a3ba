"""Providers' limits: rate-limit answers waited out without opening the breaker, the request budget, a wide
eth_getLogs that times out, and each provider's eth_getLogs block cap (configured or read from its refusal), on a
real anvil behind a forwarder that injects the fault."""
from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import pytest

from chain.rpc import ProviderUnavailable, RangeOverCap, RangeTimedOut, RpcClient
from chain.rpc_limits import (
    LEARNT_RANGE_SECONDS,
    InFlightWindow,
    RangeCap,
    TokenBucket,
    _rate_limit_in,
    range_limit_in,
    retry_after_seconds,
    suggested_range_end,
)

pytestmark = pytest.mark.anvil


def first_n(n: int, answer):
    """A fault for the first `n` requests, then the real node."""
    seen = []

    def fault(body):
        seen.append(body)
        return answer(body) if len(seen) <= n else None

    return fault


def rpc_error(body, code: int, message: str, data=None) -> bytes:
    error = {"code": code, "message": message, **({"data": data} if data is not None else {})}
    return json.dumps({"jsonrpc": "2.0", "id": body.get("id") if isinstance(body, dict) else None,
                       "error": error}).encode()


# ---------------------------------------------------------------------------- Retry-After and classification


def test_retry_after_seconds_reads_delay_seconds_and_http_dates():
    now = datetime(2026, 12, 5, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_seconds("3", now) == 3.0
    assert retry_after_seconds(" 0.5 ", now) == 0.5
    assert retry_after_seconds(format_datetime(now + timedelta(seconds=7), usegmt=True), now) == 7.0
    assert retry_after_seconds("Sat, 05 Dec 2026 11:59:00 GMT", now) == 0.0, "a date in the past: go now"
    assert retry_after_seconds("soon", now) is None and retry_after_seconds("", now) is None
    assert retry_after_seconds(None, now) is None


@pytest.mark.parametrize("code, message, limited", [
    (-32005, "project ID request rate exceeded", True),  # Infura
    (-32005, "daily request count exceeded, request rate limited", True),  # Infura
    (-32005, "limit exceeded", True),  # EIP-1474
    (429, "Your app has exceeded its compute units per second capacity.", True),  # Alchemy
    (-32007, "15/second request limit reached - reduce calls per second or upgrade your account", True),  # QuickNode
    (-32012, "credits limited to 6000/sec", True),  # QuickNode
    (-32016, "over rate limit", True),
    (-32029, "Too Many Requests", True),
    (-32000, "429 Too Many Requests: {\"code\":-32016,\"message\":\"over rate limit\"}", True),
    (-32005, "query returned more than 10000 results. Try with this block range [0x1, 0x2].", False),  # too big
    (-32000, "execution reverted", False),
    (3, "execution reverted: daily limit exceeded", False),  # a contract's revert reason, not the provider
    (-32602, "range 1000000 exceeds limit of 10000", False),
])
def test_rate_limit_in_recognises_the_providers_rate_limit_errors(code, message, limited):
    get_logs = {"method": "eth_getLogs", "params": [{"fromBlock": "0x1", "toBlock": "0x9"}]}
    body = {"error": {"code": code, "message": message}}
    assert (_rate_limit_in(get_logs, body) is not None) is limited
    # In a batch each item is read against its own call: the eth_getLogs the same as alone...
    batch = [{"id": 0, "method": "eth_blockNumber", "params": []}, {"id": 1, **get_logs}]
    assert (_rate_limit_in(batch, [{"id": 0, "result": "0x1"}, {"id": 1, **body}]) is not None) is limited
    # ... and any other call's -32005 as a rate limit (no size refusal there).
    assert (_rate_limit_in(batch, [{"id": 0, **body}, {"id": 1, "result": []}]) is not None) is (
        limited or code == -32005)


def test_rate_limit_in_takes_infuras_backoff_seconds():
    body = {"error": {"code": -32005, "message": "project ID request rate exceeded",
                      "data": {"see": "https://infura.io/dashboard", "current_rps": 13.3, "allowed_rps": 10.0,
                               "backoff_seconds": 1.5}}}
    assert _rate_limit_in({"method": "eth_blockNumber"}, body).retry_after == 1.5


# ---------------------------------------------------------------------------- rate limits on a real node


@pytest.mark.parametrize("retry_after", ["0.4", "date"])
def test_rpc_client_waits_out_429_with_retry_after_without_opening_the_breaker(anvil_node, faulty_rpc, retry_after):
    def too_many(body):
        value = retry_after if retry_after != "date" else format_datetime(
            datetime.now(timezone.utc) + timedelta(seconds=1.5), usegmt=True)
        return 429, b'{"message": "Too Many Requests"}', {"Retry-After": value}

    proxy = faulty_rpc(first_n(3, too_many))
    spare = faulty_rpc()
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", spare.url)], timeout=5)
    started = time.monotonic()
    assert client.block_number() == anvil_node.head()
    elapsed = time.monotonic() - started
    primary = client.providers[0]
    # Three answers in a row would open the breaker were they failures: it stays closed, the primary answered.
    assert primary.breaker.state == "closed" and primary.failures == 0 and client.last_provider is primary
    assert spare.requests == [], "the fallback was never needed"
    assert len(proxy.requests) == 4
    # The client waited as told: 3 × 0.4 s, or until the date (whole seconds: at least 0.5 s each time).
    assert elapsed >= (1.2 if retry_after != "date" else 1.5)
    gaps = [b - a for (a, _), (b, _) in zip(proxy.requests, proxy.requests[1:], strict=False)]
    assert min(gaps) >= (0.39 if retry_after != "date" else 0.5), gaps
    counts = client.take_counts()["primary"]
    assert counts["rate_limited"] == 3 and counts["rate_limit_wait_seconds"] >= 1.1
    assert client.take_counts()["primary"]["rate_limited"] == 0, "taken once"


@pytest.mark.parametrize("code, message, data", [
    (-32005, "project ID request rate exceeded", {"backoff_seconds": 0.3}),
    (429, "Your app has exceeded its compute units per second capacity.", None),
    (-32007, "15/second request limit reached - reduce calls per second or upgrade your account", None),
    (-32029, "Too Many Requests", None),
], ids=["infura", "alchemy", "quicknode", "too_many_requests"])
def test_rpc_client_waits_out_a_json_rpc_rate_limit_error_without_opening_the_breaker(
        anvil_node, faulty_rpc, code, message, data):
    proxy = faulty_rpc(first_n(4, lambda body: (200, rpc_error(body, code, message, data))))
    spare = faulty_rpc()
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", spare.url)], timeout=5)
    started = time.monotonic()
    assert client.block_number() == anvil_node.head()
    primary = client.providers[0]
    assert primary.breaker.state == "closed" and primary.failures == 0 and client.last_provider is primary
    assert spare.requests == [] and len(proxy.requests) == 5
    # Infura's backoff_seconds, else backoff from 0.25 s doubling, at least half of it each time (jitter).
    assert time.monotonic() - started >= (1.2 if data else 0.125 + 0.25 + 0.5 + 1.0)
    assert client.take_counts()["primary"]["rate_limited"] == 4


def test_rpc_client_batch_rate_limited_in_an_item_is_retried_whole(anvil_node, faulty_rpc):
    def quicknode(body):
        return 200, json.dumps([{"jsonrpc": "2.0", "id": item["id"], "error": {
            "code": -32012, "message": "credits limited to 6000/sec"}} for item in body]).encode()

    proxy = faulty_rpc(first_n(1, quicknode))
    client = RpcClient("bsc", [("primary", proxy.url)], timeout=5)
    headers = client.block_headers([0, 0])
    assert set(headers) == {0} and client.providers[0].failures == 0 and len(proxy.requests) == 2


def test_rpc_client_moves_to_the_fallback_when_a_rate_limit_outlasts_the_max_wait(anvil_node, faulty_rpc):
    proxy = faulty_rpc(lambda body: (429, b"{}", {"Retry-After": "3600"}))  # a daily quota spent
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", anvil_node.url)], timeout=5,
                       rate_limit_max_wait=1.0)
    started = time.monotonic()
    assert client.block_number() == anvil_node.head()
    assert client.block_number() == anvil_node.head()
    assert time.monotonic() - started < 1.0, "no waiting an hour, nor the max wait"
    primary = client.providers[0]
    assert client.last_provider.role == "fallback"
    assert primary.breaker.state == "closed" and primary.failures == 0
    assert len(proxy.requests) == 1, "the second call skips the primary while it asked to wait"


def test_rpc_client_rate_limited_everywhere_names_the_setting_to_change(faulty_rpc):
    proxy = faulty_rpc(lambda body: (429, b"{}", {"Retry-After": "60"}))
    client = RpcClient("bsc", [("primary", proxy.url)], timeout=5, rate_limit_max_wait=0.5,
                       budget_setting="BSC_RPC_MAX_RPS")
    with pytest.raises(ProviderUnavailable, match="BSC_RPC_MAX_RPS.*RPC_RATE_LIMIT_MAX_WAIT_SECONDS"):
        client.block_number()
    assert client.providers[0].breaker.state == "closed" and client.providers[0].failures == 0


def test_rpc_client_retry_after_zero_again_and_again_is_no_busy_loop(anvil_node, faulty_rpc):
    """A provider answering 429 with "Retry-After: 0" forever: the client still waits between tries and gives
    up on it within its wait limit, then the fallback answers."""
    proxy = faulty_rpc(lambda body: (429, b"{}", {"Retry-After": "0"}))
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", anvil_node.url)], timeout=5,
                       rate_limit_max_wait=1.0)
    answers = []
    # In a thread: a busy loop never returns, and must fail this test rather than hang the suite.
    call = threading.Thread(target=lambda: answers.append(client.block_number()), daemon=True)
    started = time.monotonic()
    call.start()
    call.join(timeout=10)
    assert not call.is_alive() and time.monotonic() - started < 3.0, f"{len(proxy.requests)} requests, no answer"
    assert answers == [anvil_node.head()]
    assert 3 <= len(proxy.requests) <= 12, f"{len(proxy.requests)} requests in a second: a busy loop"
    assert client.last_provider.role == "fallback" and client.providers[0].failures == 0


def test_rpc_client_passes_over_a_provider_whose_limit_outlasted_a_call(anvil_node, faulty_rpc):
    """A spent quota answering 429 without Retry-After (exponential backoff): the first call waits up to the
    limit, the calls after it go straight to the fallback instead of paying the same wait each time."""
    proxy = faulty_rpc(lambda body: (200, rpc_error(body, -32005,
                                                    "daily request count exceeded, request rate limited")))
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", anvil_node.url)], timeout=5,
                       rate_limit_max_wait=1.0)
    started = time.monotonic()
    assert client.block_number() == anvil_node.head()
    first = time.monotonic() - started
    tried = len(proxy.requests)
    started = time.monotonic()
    for _ in range(5):
        assert client.block_number() == anvil_node.head()
    # Five calls waiting again would take at least 5 × 0.375 s; passed over, they take milliseconds.
    assert time.monotonic() - started < 1.0 and len(proxy.requests) == tried, "passed over, not waited for again"
    # It waited out backoffs before giving up: with jitter the first two are at least 0.125 + 0.25 s, and it
    # gives up as soon as the next one would pass the 1 s limit (so the sum can stay below 0.5 s).
    assert 0.125 + 0.25 <= first < 2.5
    primary = client.providers[0]
    assert primary.breaker.state == "closed" and primary.failures == 0, "a rate limit is still not a failure"


def test_rpc_client_fallback_due_for_its_trial_is_not_locked_out_by_a_working_primary(anvil_node, faulty_rpc):
    """The fallback's breaker is open and due for its half-open trial while the primary answers: the trial is
    not claimed by a provider the call never tries, so when the primary dies the fallback still gets its call."""
    primary_proxy = faulty_rpc()
    client = RpcClient("bsc", [("primary", primary_proxy.url), ("fallback", anvil_node.url)], timeout=2)
    fallback = client.providers[1]
    fallback.breaker.state, fallback.breaker.opened_at = "open", time.monotonic() - 3600  # due for its trial
    for _ in range(3):
        assert client.block_number() == anvil_node.head()
    assert client.last_provider.role == "primary"
    assert fallback.breaker.state == "open", "untouched: the calls never needed it"
    primary_proxy.fault = lambda body: (502, b"bad gateway", {})
    assert client.block_number() == anvil_node.head()
    assert client.last_provider.role == "fallback" and fallback.breaker.state == "closed"


# ---------------------------------------------------------------------------- the request budget


def test_rpc_client_budget_limits_the_request_rate(anvil_node, faulty_rpc):
    calls_per_thread, threads, rps = 8, 4, 20.0

    def hammer(client: RpcClient) -> float:
        started = time.monotonic()
        workers = [threading.Thread(target=lambda: [client.block_number() for _ in range(calls_per_thread)])
                   for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return time.monotonic() - started

    free_proxy, limited_proxy = faulty_rpc(), faulty_rpc()
    free = hammer(RpcClient("bsc", [("primary", free_proxy.url)], timeout=5))
    budgeted = RpcClient("bsc", [("primary", limited_proxy.url)], timeout=5, max_rps=rps)
    limited = hammer(budgeted)
    n = calls_per_thread * threads
    stamps = [t for t, _ in limited_proxy.requests]
    measured = (n - 1) / (stamps[-1] - stamps[0])
    assert measured <= rps * 1.05, f"{measured:.1f} requests/s through a budget of {rps:g}"
    assert measured >= rps * 0.6, f"{measured:.1f} requests/s: the budget throttles far below its rate"
    # No window of one second holds more than the budget (the bucket allows no burst above it).
    assert max(sum(1 for s in stamps if t <= s < t + 1.0) for t in stamps) <= rps + 1
    assert limited >= (n - 1) / rps * 0.95 and free < limited / 2, (free, limited)
    assert budgeted.take_counts()["primary"]["budget_wait_seconds"] > 0


def test_token_bucket_unlimited_never_waits():
    bucket = TokenBucket(0)
    started = time.monotonic()
    assert all(bucket.acquire() == 0.0 for _ in range(10_000))
    assert time.monotonic() - started < 1.0


def test_token_bucket_charges_a_batch_for_each_of_its_calls():
    bucket = TokenBucket(50)
    bucket.acquire(1)  # the one token it holds
    started = time.monotonic()
    bucket.acquire(10)  # ten calls in one batch: 10 / 50 s
    assert 0.18 <= time.monotonic() - started < 0.5


# ---------------------------------------------------------------------------- a wide eth_getLogs timing out


def slow_wide_get_logs(max_blocks: int, seconds: float):
    """Holds an eth_getLogs over more than `max_blocks` blocks for `seconds`, past the client's timeout (and a batch
    holding one)."""
    def fault(body):
        for call in body if isinstance(body, list) else [body]:
            if isinstance(call, dict) and call.get("method") == "eth_getLogs":
                query = call["params"][0]
                if int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1 > max_blocks:
                    time.sleep(seconds)
                    break
        return None

    return fault


def test_rpc_client_wide_get_logs_timeout_is_range_timed_out_not_a_provider_failure(anvil_node, faulty_rpc):
    proxy = faulty_rpc(slow_wide_get_logs(4, 1.0))
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", anvil_node.url)], timeout=0.4)
    for _ in range(4):  # more than the breaker's threshold
        with pytest.raises(RangeTimedOut, match="over 10 blocks timed out") as raised:
            client.get_logs(0, 9, ["0x" + "11" * 20])
    assert raised.value.provider == "primary"
    primary = client.providers[0]
    assert primary.breaker.state == "closed" and primary.failures == 0
    assert client.get_logs(0, 3, ["0x" + "11" * 20]) == [] and client.last_provider is primary


def test_rpc_client_single_block_get_logs_timeout_is_a_provider_failure(anvil_node, faulty_rpc):
    proxy = faulty_rpc(slow_wide_get_logs(0, 1.0))  # every eth_getLogs is slow, even over one block
    client = RpcClient("bsc", [("primary", proxy.url), ("fallback", anvil_node.url)], timeout=0.4)
    assert client.get_logs(0, 0, ["0x" + "11" * 20]) == []
    assert client.providers[0].failures == 1 and client.last_provider.role == "fallback"


# ---------------------------------------------------------------------------- each provider's block range cap

# Refusals for range size as providers word them, and the limit each names.
PROVIDER_RANGE_REFUSALS = [
    ("QuickNode", -32614, "eth_getLogs is limited to a 10,000 range", 10_000),
    ("QuickNode trial", -32614, "eth_getLogs is limited to a 5 range", 5),
    ("Alchemy", -32600, "You can make eth_getLogs requests with up to a 500 block range. Based on your parameters, "
                        "this block range should work: [0x123c9b2, 0x123cba5]", 500),
    ("Alchemy free tier", -32600, "Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block "
                                  "range. Based on your parameters, this block range should work: [0x1, 0xa]", 10),
    ("Alchemy, older", -32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
                               "range and no limit on the response size, or you can request any block range with a cap "
                               "of 10K logs in the response.", 2_000),
    ("BSC's own nodes", -32000, "exceed maximum block range: 5000", 5_000),
    ("Infura", -32602, "range 1000000 exceeds limit of 10000", 10_000),
    ("Ankr", -32600, "maximum [from, to] blocks distance: 10000", 10_000),
    ("Frontier (Moonbeam)", -32603, "block range is too wide (maximum 1024)", 1_024),
    ("geth forks", -32000, "block range is larger than max block range, block range = 5120, max block range = 5000",
     5_000),
    ("Avalanche", -32000, "requested too many blocks from 0 to 100000, maximum is set to 2048", 2_048),
    ("BlockPI", -32000, "eth_getLogs is limited to 1024 block range", 1_024),
    ("Blast", -32000, "eth_getLogs exceeds the range allowed for your plan (10001 > 5000)", 5_000),
    ("Coinbase", -32000, "please limit the query to at most 10000 blocks", 10_000),
    ("Hyperliquid", -32000, "query exceeds max block range 1000", 1_000),
    ("Cloudflare", -32047, "Max range: 800", 800),
    ("thirdweb", -32602, "Maximum allowed number of requested blocks is 1000", 1_000),
    ("merkle", -32000, "eth_getLogs range is too large, max is 10k blocks", 10_000),
]


@pytest.mark.parametrize("provider, code, message, limit", PROVIDER_RANGE_REFUSALS,
                         ids=[p for p, *_ in PROVIDER_RANGE_REFUSALS])
def test_range_limit_in_reads_each_providers_wording(provider, code, message, limit):
    assert range_limit_in(message) == limit
    body = {"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": message}}
    # A refusal for its size, never a rate limit (even under -32005 or with "limit" in it).
    assert _rate_limit_in({"method": "eth_getLogs", "params": [{}]}, body) is None


@pytest.mark.parametrize("message", [
    "query returned more than 10000 results. Try with this block range [0x10, 0x2f].",  # logs, not blocks
    "logs matched by query exceeds limit of 10000",
    "credits limited to 6000/sec",  # QuickNode's rate limit
    "Block range limit exceeded.",  # a refusal naming no limit: halved, as before
    "failed to fetch logs for block range 0x10-0x20: upstream timeout",
])
def test_range_limit_in_finds_no_block_limit_where_none_is_named(message):
    assert range_limit_in(message) is None


def test_suggested_range_end_reads_infuras_and_alchemys_suggestion_from_the_same_block():
    assert suggested_range_end("query returned more than 10000 results. Try with this block range "
                               "[0x10, 0x2f].", 0x10) == 0x2f
    assert suggested_range_end("this block range should work: [0x123c9b2, 0x123cba5]", 0x123c9b2) == 0x123cba5
    assert suggested_range_end("Try with this block range [0x10, 0x2f].", 0x11) is None  # another range's
    assert suggested_range_end("exceed maximum block range: 5000", 0x10) is None


def test_range_cap_is_never_below_one_block_and_always_narrower_than_the_refused_range():
    cap = RangeCap()
    assert cap.blocks() is None and cap.source() == ""
    assert cap.learn(0, 10, "eth_getLogs is limited to a 0 range") == 1
    cap = RangeCap()
    # "up to a 500 block range" refusing 500 blocks: the limit was counted another way; 499 cannot be refused again.
    assert cap.learn(500, 500, "up to a 500 block range") == 499
    assert cap.learn(5_000, 10_000, "exceed maximum block range: 5000") == 499, "a cap learnt is only ever lowered"
    assert RangeCap().learn(1, 1, "limited to a 1 range") == 1


def test_range_cap_configured_and_learnt_the_lower_wins_and_the_learnt_one_expires():
    cap = RangeCap(configured=10_000)
    assert (cap.blocks(), cap.source()) == (10_000, "configured")
    cap.learn(2_000, 10_000, "up to a 2K block range", now=100.0)
    assert (cap.blocks(now=101.0), cap.source(now=101.0)) == (2_000, "learnt")
    assert cap.refusal == "up to a 2K block range" and cap.learnt_at is not None
    later = 100.0 + LEARNT_RANGE_SECONDS + 1
    assert (cap.blocks(now=later), cap.source(now=later)) == (10_000, "configured"), "a plan upgraded is found again"


def test_rpc_client_holds_each_provider_to_its_own_cap_without_asking_it(anvil_node, faulty_rpc):
    primary, fallback = faulty_rpc(), faulty_rpc()
    client = RpcClient("bsc", [("primary", primary.url), ("fallback", fallback.url)],
                       max_block_ranges={"primary": 10, "fallback": 4})
    address = ["0x" + "11" * 20]
    assert client.get_logs(0, 9, address) == [] and client.block_range_cap() == 10
    with pytest.raises(RangeOverCap) as refused:
        client.get_logs(0, 10, address)
    assert (refused.value.cap, refused.value.provider) == (10, "primary")
    assert len(primary.get_logs_spans()) == 1, "refused here: the provider never saw it"
    client.providers[0].breaker.state, client.providers[0].breaker.opened_at = "open", time.monotonic()
    with pytest.raises(RangeOverCap) as refused:  # the fallback's turn: its own, smaller cap
        client.get_logs(0, 9, address)
    assert (refused.value.cap, refused.value.provider) == (4, "fallback")
    assert client.get_logs(0, 3, address) == [] and client.last_provider.role == "fallback"
    assert client.block_range_cap() == 4 and fallback.get_logs_spans() == [4]


def test_rpc_client_keeps_a_learnt_cap_per_provider_and_shows_it(anvil_node, faulty_rpc):
    client = RpcClient("bsc", [("primary", anvil_node.url), ("fallback", anvil_node.url)],
                       max_block_ranges={"fallback": 2_000})
    assert client.learn_block_range("primary", 10_000, 20_000, "eth_getLogs is limited to a 10,000 range") == 10_000
    assert client.learn_block_range("fallback", 5_000, 10_000, "exceed maximum block range: 5000") == 2_000
    shown = {p["role"]: p for p in client.snapshot()}
    assert (shown["primary"]["max_block_range"], shown["primary"]["max_block_range_source"]) == (10_000, "learnt")
    assert shown["primary"]["max_block_range_refusal"] == "eth_getLogs is limited to a 10,000 range"
    assert shown["primary"]["max_block_range_learnt_at"] is not None
    assert (shown["fallback"]["max_block_range"], shown["fallback"]["max_block_range_source"]) == (2_000, "configured")
    assert shown["fallback"]["max_block_range_refusal"] == ""


# ---------------------------------------------------------------------------- requests in flight


def test_in_flight_window_grows_to_its_ceiling_while_light_answers_come_as_fast_as_ever():
    window = InFlightWindow(8)
    assert window.current() == 4
    for _ in range(10):
        window.answered(0.05, 0, now=1.0)
    assert window.current() == 8
    # A busy hour: a few heavy answers barely move it; a dense history brings it back to the window it had before
    # (the CPU sets the pace there).
    for _ in range(5):
        window.answered(0.5, 5_000, now=1.0)
    assert window.current() == 7
    for _ in range(30):
        window.answered(0.5, 5_000, now=1.0)
    assert window.current() == 4


def test_in_flight_window_halves_on_a_rate_limit_once_per_burst_then_grows_back_slowly():
    window = InFlightWindow(8, start=8)
    for _ in range(8):  # the window's eight answers, rate limited together
        window.rate_limited(now=10.0)
    assert window.current() == 4 and window.halvings == 1
    window.answered(0.05, 0, now=10.5)
    assert window.current() == 4, "no growth right after it"
    window.rate_limited(now=11.5)
    assert window.current() == 2 and window.halvings == 2
    for _ in range(4):
        window.answered(0.05, 0, now=13.0)
    assert window.current() == 3, "half a request per answer above the threshold a rate limit left"
    for _ in range(5):
        window.rate_limited(now=20.0 + _ * 2)
    assert window.current() == 1, "never below one"


def test_in_flight_window_shrinks_when_answers_slow_down_as_it_grows():
    window = InFlightWindow(16, start=16)
    window.answered(0.05, 0, now=1.0)  # the fastest: 50 ms
    for _ in range(6):  # a provider serving them one after another: 16 in flight take 16 times as long
        window.answered(0.05 * window.current(), 0, now=1.0)
    assert window.current() <= 10
    assert window.threshold <= 10


# ---------------------------------------------------------------------------- counters from outside the sync


@pytest.mark.django_db(transaction=True)
def test_rate_limit_waits_outside_the_sync_reach_the_stored_totals(
        anvil_node, faulty_rpc, chain_settings, deployment, tmp_path, client):
    """A Celery task's or a page's RPC calls that waited out a 429 add to chain_rpc_providers (what /metrics
    reads) when the task or request ends, once each; nothing is written when nothing was counted."""
    from chain import rpc
    from chain.models import RpcProvider
    from ops.monitoring.tasks import check_contracts

    proxy = faulty_rpc(first_n(2, lambda body: (429, b"{}", {"Retry-After": "0.2"})))
    chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(
        tmp_path / "limited.json", rpc_url=proxy.url, rpc_fallback=anvil_node.url)
    rpc.reset_clients()

    def stored() -> float:
        row = RpcProvider.objects.filter(chain="bsc", role="primary").first()
        return row.rate_limited if row else 0

    check_contracts.apply()  # eager: the same task_postrun as in a worker
    assert stored() == 2
    check_contracts.apply()  # no 429 this time: nothing new to add
    assert stored() == 2

    proxy.fault = first_n(1, lambda body: (429, b"{}", {"Retry-After": "0.2"}))
    rpc.get_client("bsc").block_number()  # as a page would, in this (web) process
    assert stored() == 2, "counted in memory until the request ends"
    client.get("/admin/login/")
    assert stored() == 3
    assert RpcProvider.objects.get(chain="bsc", role="primary").rate_limit_wait_seconds >= 0.5
