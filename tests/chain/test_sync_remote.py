"""The sync over a distant, limited provider: several eth_getLogs in flight, ranges shrunk on timeouts, rate limits
waited out; the mirror equals the chain every time (real anvil and PostgreSQL, a forwarder only to inject faults)."""
from __future__ import annotations

import json
import threading

import pytest

from chain import local
from chain.models import ChainEvent, EventSyncCursor, RpcProvider
from chain.rpc import ProviderUnavailable, reset_clients
from chain.sync import sync_chain

from .test_rpc_limits import slow_wide_get_logs
from .test_sync import assert_mirror_equals_chain, chain_logs, mirror_contents

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

MARKET_ORDERS = 80


def through(settings, deployment, tmp_path, proxy, *, in_flight: int, timeout: float = 5.0, batch_blocks: int = 0):
    """Point the chain's primary and fallback at `proxy`, with `in_flight` eth_getLogs at once (of
    `batch_blocks` blocks at most, when given: the module's market fills only a few dozen blocks)."""
    settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(
        tmp_path / f"via-{proxy.url.rsplit(':', 1)[1]}.json", rpc_url=proxy.url, rpc_fallback=proxy.url)
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "max_in_flight": in_flight,
                                                      **({"batch_blocks": batch_blocks} if batch_blocks else {})}}
    settings.RPC_TIMEOUT_SECONDS = timeout
    reset_clients()


def test_sync_with_several_requests_in_flight_gives_the_same_mirror_as_one_at_a_time(
        small_batches, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    serial = faulty_rpc(delay=0.03)
    through(small_batches, deployment, tmp_path, serial, in_flight=1, batch_blocks=1)
    one = sync_chain("bsc", max_seconds=600)
    expected = mirror_contents()
    assert serial.max_in_flight == 1

    local.reset_mirror()
    overlapped = faulty_rpc(delay=0.03)
    through(small_batches, deployment, tmp_path, overlapped, in_flight=4, batch_blocks=1)
    four = sync_chain("bsc", max_seconds=600)

    head = anvil_node.head()
    assert one.to_block == four.to_block == head and four.events == one.events == len(
        chain_logs(anvil_node, deployment, head))
    assert four.batches > 10, "enough ranges to keep a window full"
    assert overlapped.max_in_flight >= 3, "the ranges really overlapped at the provider"
    assert four.ranges == sorted(four.ranges) and all(
        a[1] + 1 == b[0] for a, b in zip(four.ranges, four.ranges[1:], strict=False)), "applied in block order, no gap"
    assert mirror_contents() == expected
    assert_mirror_equals_chain(anvil_node, deployment)


def test_sync_failure_in_the_middle_of_a_window_loses_and_duplicates_nothing(
        small_batches, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    seen, doomed, lock, failing = [], [], threading.Lock(), threading.Event()
    failing.set()

    def fail_the_eighth_range(body):
        # The eighth range asked for fails on every provider (both are this forwarder) while its neighbours are
        # in flight; every other range answers.
        if isinstance(body, dict) and body.get("method") == "eth_getLogs" and failing.is_set():
            frm = body["params"][0]["fromBlock"]
            with lock:
                seen.append(frm)
                if len(seen) == 8:
                    doomed.append(frm)
            if frm in doomed:
                return 503, b"upstream unavailable"
        return None

    proxy = faulty_rpc(fail_the_eighth_range, delay=0.03)
    through(small_batches, deployment, tmp_path, proxy, in_flight=4, batch_blocks=1)
    with pytest.raises(ProviderUnavailable):
        sync_chain("bsc", max_seconds=600)
    assert proxy.max_in_flight >= 3, "the failure came with other ranges in flight"
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert cursor.last_block < int(doomed[0], 16), "nothing applied past the failed range"
    assert ChainEvent.objects.count() == len(chain_logs(anvil_node, deployment, cursor.last_block)), "no gap"

    failing.clear()
    result = sync_chain("bsc", max_seconds=600)
    head = anvil_node.head()
    assert result.from_block == cursor.last_block + 1 and result.to_block == head
    assert ChainEvent.objects.count() == len(chain_logs(anvil_node, deployment, head)), "no duplicate"
    assert_mirror_equals_chain(anvil_node, deployment)


def test_sync_halves_a_wide_range_the_provider_times_out_on_and_the_mirror_equals_the_chain(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    proxy = faulty_rpc(slow_wide_get_logs(4, 1.2))
    through(chain_settings, deployment, tmp_path, proxy, in_flight=2, timeout=0.5)
    result = sync_chain("bsc", max_seconds=600)
    head = anvil_node.head()
    spans = proxy.get_logs_spans()
    assert max(spans) > 4, "a wide range was tried"
    # Each halving of the first wide range costs one timeout; after that the width that worked caps every range
    # (the rest of this one, the next ones, the one in flight beside it), so no wide range is tried again.
    timed_out = [s for s in spans if s > 4]
    halvings = (max(spans) // 4).bit_length()  # from the widest range down to 4 blocks
    assert timed_out == sorted(timed_out, reverse=True) and len(timed_out) <= halvings + 1, spans
    assert result.to_block == head and result.events == len(chain_logs(anvil_node, deployment, head))
    assert all(to - frm + 1 <= 4 for frm, to in result.ranges)
    providers = {p.role: p for p in RpcProvider.objects.filter(chain="bsc")}
    assert providers["primary"].state == "closed" and providers["primary"].failures == 0
    assert providers["primary"].getlogs_splits_timeout >= 1 and providers["primary"].getlogs_splits_too_big == 0
    assert_mirror_equals_chain(anvil_node, deployment)


def test_sync_waits_out_rate_limits_and_counts_them(
        small_batches, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    answered = []

    def every_third_get_logs_rate_limited(body):
        if isinstance(body, dict) and body.get("method") == "eth_getLogs":
            answered.append(1)
            if len(answered) % 3 == 0:
                return 200, json.dumps({"jsonrpc": "2.0", "id": body["id"], "error": {
                    "code": -32005, "message": "project ID request rate exceeded",
                    "data": {"backoff_seconds": 0.05}}}).encode()
        return None

    proxy = faulty_rpc(every_third_get_logs_rate_limited)
    through(small_batches, deployment, tmp_path, proxy, in_flight=4)
    result = sync_chain("bsc", max_seconds=600)
    head = anvil_node.head()
    assert result.to_block == head and result.events == len(chain_logs(anvil_node, deployment, head))
    primary = RpcProvider.objects.get(chain="bsc", role="primary")
    assert primary.state == "closed" and primary.failures == 0 and primary.in_use
    assert primary.rate_limited == len(answered) // 3 and primary.rate_limit_wait_seconds > 0
    assert_mirror_equals_chain(anvil_node, deployment)
