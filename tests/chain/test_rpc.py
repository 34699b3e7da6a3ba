"""RPC access: circuit breakers, failover to the fallback and back, errors that are the request's fault."""
from __future__ import annotations

import time

import pytest

from chain.rpc import ProviderUnavailable, RpcClient, RpcError, redact_url
from chain.rpc_breaker import CircuitBreaker
from tests.local_http import LocalHttpServer

from .conftest import calldata, dead_url

pytestmark = pytest.mark.anvil


# ---------------------------------------------------------------------------- CircuitBreaker


def test_circuit_breaker_stays_closed_below_the_threshold():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    breaker.record_failure(now=0)
    breaker.record_failure(now=1)
    assert breaker.state == "closed" and breaker.allow(now=1)


def test_circuit_breaker_opens_after_three_consecutive_failures():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    for t in range(3):
        breaker.record_failure(now=t)
    assert breaker.state == "open"
    assert not breaker.allow(now=5)


def test_circuit_breaker_success_resets_the_failure_count():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    breaker.record_failure(now=0)
    breaker.record_failure(now=0)
    breaker.record_success()
    breaker.record_failure(now=0)
    assert breaker.state == "closed" and breaker.consecutive_failures == 1


def test_circuit_breaker_goes_half_open_after_reset_and_allows_one_trial():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    for _ in range(3):
        breaker.record_failure(now=100)
    assert not breaker.allow(now=109.9)
    assert breaker.allow(now=110)
    assert breaker.state == "half_open"
    assert not breaker.allow(now=110.1), "a second call while the trial is in flight"


def test_circuit_breaker_half_open_closes_on_success():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    for _ in range(3):
        breaker.record_failure(now=100)
    assert breaker.allow(now=111)
    breaker.record_success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0 and breaker.allow(now=111)


def test_circuit_breaker_half_open_opens_again_on_failure():
    breaker = CircuitBreaker(threshold=3, reset_seconds=10)
    for _ in range(3):
        breaker.record_failure(now=100)
    assert breaker.allow(now=111)
    breaker.record_failure(now=111)
    assert breaker.state == "open" and breaker.opened_at == 111
    assert not breaker.allow(now=120)
    assert breaker.allow(now=121) and breaker.state == "half_open"


# ---------------------------------------------------------------------------- RpcClient on a real node


def test_rpc_client_fails_over_to_the_fallback_when_the_primary_is_dead(anvil_node):
    client = RpcClient("bsc", [("primary", dead_url()), ("fallback", anvil_node.url)], timeout=2)
    assert client.block_number() == anvil_node.head()
    assert client.last_provider.role == "fallback" and client.using_fallback
    primary, fallback = client.providers
    assert primary.failures == 1 and primary.breaker.state == "closed"
    for _ in range(2):
        client.chain_id()
    assert primary.breaker.state == "open" and primary.failures == 3
    calls = primary.calls
    client.block_number()
    assert primary.calls == calls, "an open primary is skipped"
    snapshot = {s["role"]: s for s in client.snapshot()}
    assert snapshot["primary"]["state"] == "open" and snapshot["primary"]["opened_at"] is not None
    assert snapshot["fallback"]["in_use"] and not snapshot["primary"]["in_use"]
    assert fallback.latency_ms is not None and fallback.breaker.state == "closed"


def test_rpc_client_returns_to_the_primary_once_it_answers_again(anvil_node, tcp_proxy):
    tcp_proxy.kill()
    client = RpcClient("bsc", [("primary", tcp_proxy.url), ("fallback", anvil_node.url)], timeout=2)
    for provider in client.providers:
        provider.breaker.reset_seconds = 0.2
    for _ in range(3):
        client.block_number()
    assert client.providers[0].breaker.state == "open" and client.last_provider.role == "fallback"

    tcp_proxy.start()
    client.block_number()
    assert client.last_provider.role == "fallback", "still open: the reset time has not passed"
    time.sleep(0.25)
    client.block_number()
    assert client.last_provider.role == "primary"
    assert client.providers[0].breaker.state == "closed" and not client.using_fallback


def test_rpc_client_half_open_primary_that_still_fails_opens_again(anvil_node, tcp_proxy):
    tcp_proxy.kill()
    client = RpcClient("bsc", [("primary", tcp_proxy.url), ("fallback", anvil_node.url)], timeout=2)
    client.providers[0].breaker.reset_seconds = 0.2
    for _ in range(3):
        client.block_number()
    time.sleep(0.25)
    failures = client.providers[0].failures
    assert client.block_number() == anvil_node.head()
    assert client.providers[0].failures == failures + 1, "one trial call"
    assert client.providers[0].breaker.state == "open" and client.last_provider.role == "fallback"


def test_rpc_client_raises_provider_unavailable_when_every_provider_is_dead():
    client = RpcClient("bsc", [("primary", dead_url()), ("fallback", dead_url())], timeout=1)
    with pytest.raises(ProviderUnavailable, match="every RPC provider failed"):
        client.block_number()
    assert all(p.failures == 1 for p in client.providers)


def test_rpc_client_keeps_raising_provider_unavailable_when_both_breakers_are_open():
    client = RpcClient("bsc", [("primary", dead_url()), ("fallback", dead_url())], timeout=1)
    for _ in range(3):
        with pytest.raises(ProviderUnavailable):
            client.chain_id()
    assert [p.breaker.state for p in client.providers] == ["open", "open"]
    with pytest.raises(ProviderUnavailable):
        client.chain_id()


def test_rpc_client_needs_a_url():
    with pytest.raises(ProviderUnavailable, match="BSC_RPC_URL"):
        RpcClient("bsc", [("primary", ""), ("fallback", "")])


def test_rpc_client_revert_raises_rpc_error_without_opening_the_breaker(anvil_node, deployment):
    client = RpcClient("bsc", [("primary", anvil_node.url), ("fallback", anvil_node.url)], timeout=5)
    stranger = anvil_node.accounts[5]
    for _ in range(4):  # more than the breaker's threshold
        with pytest.raises(RpcError) as raised:
            client.eth_call(deployment.pool, calldata("setEscrow(address)", stranger), sender=stranger)
        assert "revert" in raised.value.message.lower()
    primary, fallback = client.providers
    assert primary.breaker.state == "closed" and primary.failures == 0
    assert fallback.calls == 0, "a revert is the request's fault: no failover"


def test_rpc_client_batch_raises_rpc_error_for_a_failing_item(anvil_node, deployment):
    client = RpcClient("bsc", [("primary", anvil_node.url)], timeout=5)
    stranger = anvil_node.accounts[5]
    with pytest.raises(RpcError):
        client.batch([("eth_blockNumber", []),
                      ("eth_call", [{"to": deployment.pool, "from": stranger,
                                     "data": calldata("setEscrow(address)", stranger)}, "latest"])])
    assert client.providers[0].breaker.state == "closed"


def test_rpc_client_block_headers_reads_hashes_and_timestamps(anvil_node):
    client = RpcClient("bsc", [("primary", anvil_node.url)], timeout=5)
    head = anvil_node.head()
    headers = client.block_headers([0, head])
    block = anvil_node.call("eth_getBlockByNumber", [hex(head), False])
    assert headers[head] == {"hash": block["hash"].lower(), "timestamp": int(block["timestamp"], 16)}
    with pytest.raises(RpcError, match="not found"):
        client.block_headers([head + 1000])


@pytest.mark.parametrize("status, body", [
    (503, b"busy"),
    (200, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32603,"message":"internal error"}}'),
], ids=["http_503", "internal_error"])
def test_rpc_client_treats_a_sick_provider_as_down_and_fails_over(anvil_node, status, body):
    # (A rate limit, HTTP 429 or -32005, is waited out instead: tests/chain/test_rpc_limits.py.)
    server = LocalHttpServer(lambda path, headers, request: (status, body))
    try:
        client = RpcClient("bsc", [("primary", server.url), ("fallback", anvil_node.url)], timeout=2)
        assert client.block_number() == anvil_node.head()
        assert client.providers[0].failures == 1 and client.last_provider.role == "fallback"
    finally:
        server.close()


@pytest.mark.parametrize("message, too_big", [
    ("query returned more than 10000 results. Try with this block range [0x1, 0x2].", True),  # Infura
    ("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range", True),  # Alchemy
    ("exceed maximum block range: 5000", True),  # BSC nodes
    ("block range is too wide", True),
    ("eth_getLogs is limited to a 10,000 range", True),
    ("limit exceeded", False),  # a rate limit: the provider is busy
    ("daily request count exceeded, request rate limited", False),
    ("internal error", False),
    ("Internal error: failed to fetch logs for block range 100-200: upstream timeout", False),  # an outage
    ("block range extends beyond current head block", False),
    ("requested block range is not available (pruned)", False),
    ("daily response size limit exceeded", False),
])
def test_a_refusal_of_the_request_size_is_not_the_providers_fault(message, too_big):
    from chain.rpc_limits import _refused_as_too_big

    body = {"error": {"code": -32005, "message": message}}
    assert _refused_as_too_big({"method": "eth_getLogs", "params": []}, body) is too_big
    assert _refused_as_too_big({"method": "eth_getBlockByNumber", "params": []}, body) is False  # only log queries
    assert _refused_as_too_big([{"method": "eth_getLogs"}], body) is False  # nor batches


def test_rpc_client_times_out_a_provider_that_never_answers(anvil_node):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        client = RpcClient("bsc", [("primary", f"http://127.0.0.1:{silent.getsockname()[1]}"),
                                   ("fallback", anvil_node.url)], timeout=0.3)
        started = time.monotonic()
        assert client.block_number() == anvil_node.head()
        assert time.monotonic() - started < 2
        assert "Timeout" in client.providers[0].last_error
    finally:
        silent.close()


# ---------------------------------------------------------------------------- redact_url


@pytest.mark.parametrize("url, shown", [
    ("https://user:s3cret@bsc.example.com/v3/abcdef0123456789?apikey=k3y", "https://bsc.example.com/…"),
    ("https://bsc-mainnet.nodereal.io/v1/0123456789abcdef", "https://bsc-mainnet.nodereal.io/…"),
    ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
    ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
    ("wss://token@eth.example.org:8443/ws?key=abc#frag", "wss://eth.example.org:8443/…"),
    ("", ""),
])
def test_redact_url_hides_credentials_and_api_keys(url, shown):
    assert redact_url(url) == shown
    for secret in ("s3cret", "user", "abcdef", "k3y", "token", "key=abc", "frag"):
        if secret in url:
            assert secret not in redact_url(url)


def test_rpc_client_snapshot_never_contains_the_secret(anvil_node):
    client = RpcClient("bsc", [("primary", "https://u:pw@rpc.example.com/key123"), ("fallback", anvil_node.url)])
    rendered = repr(client.snapshot())
    assert "pw" not in rendered and "key123" not in rendered


# ---------------------------------------------------------------------------- the environment, read once


def test_calls_go_through_the_proxy_and_netrc_credentials_the_environment_gives(monkeypatch, tmp_path):
    seen = []

    def proxy(path, headers, body):
        seen.append((path, headers.get("Authorization")))
        return 200, b'{"jsonrpc": "2.0", "id": 1, "result": "0x2a"}'

    server = LocalHttpServer(proxy)
    netrc = tmp_path / "netrc"
    netrc.write_text("machine rpc.invalid login ops password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NETRC", str(netrc))
    for name in ("NO_PROXY", "no_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        client = RpcClient("bsc", [("primary", "http://rpc.invalid:8545/key")])
        assert client.block_number() == 42
        assert client.block_number() == 42  # the second call: the settings read at the first still apply
    finally:
        server.close()
    # An HTTP proxy is asked for the absolute URL; requests sends the ~/.netrc login as basic auth.
    assert [path for path, _ in seen] == ["http://rpc.invalid:8545/key"] * 2
    assert all(auth == "Basic b3BzOnMzY3JldA==" for _, auth in seen)


def test_a_refusal_leaves_no_reference_cycle_holding_the_callers_frames():
    """A sync run pauses the cyclic collector: an RpcError held in a cycle with its traceback would keep the frames
    it passed through (a catch-up's fetched batches among their locals) alive until the next collection."""
    import gc

    refusal = b'{"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": "exceed maximum block range: 5000"}}'
    server = LocalHttpServer(lambda path, headers, body: (200, refusal))
    client = RpcClient("bsc", [("primary", server.url)])

    def fetch(batch: list) -> None:  # a caller whose frame holds what it fetched
        try:
            client.get_logs(1, 10_000, [])
        except RpcError as exc:
            assert exc.provider == "primary" and exc.code == -32000

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for _ in range(3):
            fetch(["a fetched batch"])
        gc.collect()
        leaked = [type(o).__name__ for o in gc.garbage if isinstance(o, BaseException) or type(o).__name__ == "frame"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        server.close()
    assert leaked == []


def test_a_forked_process_asks_the_chain_over_connections_of_its_own(settings):
    """Celery's prefork pool forks a parent that may have read a chain already (its system checks do): a child that
    kept the parent's client would share its HTTP connection, and two processes reading one socket get each other's
    answers (seen on make run: a batch's answer to a single eth_blockNumber)."""
    import json
    import os

    from chain import rpc

    def echo(path, headers, raw):
        body = json.loads(raw)
        time.sleep(0.2)  # both processes' requests are out at once
        return 200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": body["params"][0]}).encode()

    server = LocalHttpServer(echo, keep_alive=True)
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "rpc_url": server.url,
                                                  "rpc_fallback": server.url}}
    rpc.reset_clients()
    try:
        parent = rpc.get_client("bsc")
        for round_ in range(3):
            assert parent.call("echo", [f"warm {round_}"]) == f"warm {round_}"  # a connection open in the pool
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report, never return into pytest
                try:
                    inherited = bool(rpc.clients())
                    own = rpc.get_client("bsc").call("echo", ["child"]) == "child"
                    os.write(write_end, b"ok" if own and not inherited else b"inherited" if inherited else b"mixed")
                finally:
                    os._exit(0)
            os.close(write_end)
            time.sleep(0.05)
            assert parent.call("echo", ["parent"]) == "parent"
            os.waitpid(pid, 0)
            with os.fdopen(read_end, "rb") as child:
                assert child.read() == b"ok"
    finally:
        rpc.reset_clients()
        server.close()


def test_a_large_answer_arrives_whole_over_a_connection_kept_for_the_next_call():
    """The body is read in one call, not requests' 10 KB pieces (each of which waits for the interpreter behind the
    sync's decoding threads): a busy range's answer of several megabytes comes back intact, and the connection is
    given back to the pool for the next request."""
    import json

    logs = [{"blockNumber": hex(i), "data": "0x" + "ab" * 256} for i in range(12_000)]  # about 6.5 MB

    def answer(path, headers, raw):
        body = json.loads(raw)
        return 200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": logs if body["method"] == "big"
                                else body["method"]}).encode()

    server = LocalHttpServer(answer, keep_alive=True)
    try:
        client = RpcClient("bsc", [("primary", server.url)])
        assert client.call("big", []) == logs
        assert client.call("small", []) == "small"
        assert client.call("big", []) == logs
        assert server.connections == 1
    finally:
        server.close()


def test_an_answer_cut_short_is_the_providers_failure_and_the_fallback_answers():
    """A provider that closes the connection in the middle of an answer (a proxy restarting, a dropped link) has
    failed this call: the client goes on to the fallback instead of raising a library's error."""
    import json

    def cut(path, headers, raw):
        return 200, b'{"jsonrpc": "2.0", "id": 1, "result": ["0x1", ', {"Content-Length": "100000"}

    def whole(path, headers, raw):
        return 200, json.dumps({"jsonrpc": "2.0", "id": json.loads(raw)["id"], "result": "0x2a"}).encode()

    broken, fallback = LocalHttpServer(cut, keep_alive=True), LocalHttpServer(whole)
    try:
        client = RpcClient("bsc", [("primary", broken.url), ("fallback", fallback.url)], timeout=2)
        assert client.block_number() == 42
        assert client.last_provider.role == "fallback" and client.providers[0].failures == 1
        with pytest.raises(ProviderUnavailable, match="ProtocolError"):
            RpcClient("bsc", [("primary", broken.url)], timeout=2).block_number()
    finally:
        broken.close()
        fallback.close()
