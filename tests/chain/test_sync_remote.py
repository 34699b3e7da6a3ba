"""The sync over a distant, limited provider: several eth_getLogs in flight, ranges shrunk on timeouts, rate limits
waited out, a provider's block cap learnt from its refusal, empty stretches crossed in few requests; the mirror
equals the chain every time (real anvil and PostgreSQL, a forwarder only to inject faults and stretch the chain)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from chain import local
from chain.fetch import FetchRules
from chain.models import ChainEvent, EventSyncCursor, RpcProvider
from chain.rpc import ProviderUnavailable, get_client, reset_clients
from chain.stretched import StretchedChain
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


def test_a_first_run_asks_for_the_chain_id_the_head_and_its_first_range_in_one_request(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    proxy = faulty_rpc(delay=0.01)
    through(chain_settings, deployment, tmp_path, proxy, in_flight=4)
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)
    first = proxy.requests[0][1]
    assert [call["method"] for call in first] == ["eth_chainId", "eth_blockNumber", "eth_getLogs"]
    (frm, to), *ranges = get_logs_ranges(proxy)  # the first is the first request's
    assert (frm, to) == (result.from_block, result.from_block + 9) and (frm, to) not in ranges, "never asked again"
    assert min(f for f, _ in ranges) == to + 1


def test_a_first_runs_first_range_keeps_to_a_configured_cap(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    proxy = faulty_rpc(delay=0.01)
    through(chain_settings, deployment, tmp_path, proxy, in_flight=4)
    chain_settings.CHAINS = {**chain_settings.CHAINS, "bsc": {**chain_settings.CHAINS["bsc"], "max_block_range": 5}}
    reset_clients()
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)
    assert proxy.requests[0][1][2]["method"] == "eth_getLogs"
    assert get_logs_ranges(proxy)[0] == (result.from_block, result.from_block + 4)
    assert max(proxy.get_logs_spans()) <= 5 and result.ranges[0] == (result.from_block, result.from_block + 4)


def test_a_provider_refusing_the_first_range_in_the_first_request_is_asked_again_without_it(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    head = anvil_node.head()
    as_is = StretchedChain(anvil_node.url, head, [], head)  # every block at its own number
    proxy = faulty_rpc(capped(as_is, max_blocks=5), delay=0.01)  # a trial plan's cap, on each call of a batch too
    through(chain_settings, deployment, tmp_path, proxy, in_flight=4)
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)
    methods = [[call["method"] for call in body] for _, body in proxy.requests[:2]]
    assert methods == [["eth_chainId", "eth_blockNumber", "eth_getLogs"], ["eth_chainId", "eth_blockNumber"]]
    assert RpcProvider.objects.get(chain="bsc", role="primary").max_block_range == 5


def test_a_window_emptied_before_the_answers_own_thread_refills_it_goes_on_to_the_head(
        small_batches, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, monkeypatch):
    """Each request's own thread starts the next ones after its answer is marked done: the handing-on thread can
    hand that answer on first and find nothing out. It must wait for the refill, not take the empty window for the
    end of the run (one request in flight makes that the common case; the refill is slowed here to make it sure)."""
    from chain.fetch import Prefetcher

    answered = Prefetcher._answered

    def late(self, future):
        time.sleep(0.02)
        answered(self, future)

    monkeypatch.setattr(Prefetcher, "_answered", late)
    through(small_batches, deployment, tmp_path, faulty_rpc(), in_flight=1, batch_blocks=1)
    result = sync_chain("bsc", max_seconds=600)
    head = anvil_node.head()
    assert result.batches > 10 and result.to_block == head
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


# ---------------------------------------------------------------------------- a long, sparse history


GAP = 100_000  # an empty stretch (about 21 hours of BSC blocks) between the market's busy blocks
TAIL = 30_000  # and a quiet stretch from its last trade to the head
RANGE_CAP = 5_000  # the provider's eth_getLogs block limit (BSC's own nodes)


@pytest.fixture
def stretched(chain_market, anvil_node, deployment) -> StretchedChain:
    """The module's market on a longer chain: its blocks up to the resolutions where they are, an empty stretch of
    GAP blocks, the rest, and TAIL quiet blocks up to the head."""
    base, real_head = deployment.deploy_block, anvil_node.head()
    cut = chain_market.phase_blocks["resolve"]
    positions = [r + (GAP if r >= cut else 0) for r in range(base + 1, real_head + 1)]
    return StretchedChain(anvil_node.url, base, positions, positions[-1] + TAIL)


def capped(stretch: StretchedChain, *, max_blocks: int = RANGE_CAP, max_logs: int = 0, refused: list | None = None):
    """A provider that refuses eth_getLogs over `max_blocks` blocks in the words of BSC's own nodes and, with
    `max_logs`, answers over that many logs with Infura's refusal and the range it suggests (the last block before the
    first log past the limit); each call of a batch on its own, as providers answer them. Each refusal is appended to
    `refused` as (kind, blocks)."""
    refused = [] if refused is None else refused

    def one(call) -> bytes:
        if not (isinstance(call, dict) and call.get("method") == "eth_getLogs"):
            return stretch.answer(call)
        query = call["params"][0]
        frm, to = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        if to - frm + 1 > max_blocks:
            refused.append(("range", to - frm + 1))
            return json.dumps({"jsonrpc": "2.0", "id": call["id"], "error": {
                "code": -32000, "message": f"exceed maximum block range: {max_blocks}"}}).encode()
        answer = stretch.answer(call)
        logs = json.loads(answer)["result"]
        if max_logs and len(logs) > max_logs:
            refused.append(("logs", to - frm + 1))
            end = max(frm, int(logs[max_logs]["blockNumber"], 16) - 1)
            return json.dumps({"jsonrpc": "2.0", "id": call["id"], "error": {
                "code": -32005, "message": f"query returned more than {max_logs} results. Try with this block range "
                                           f"[{hex(frm)}, {hex(end)}]."}}).encode()
        return answer

    def fault(body):
        return 200, b"[" + b",".join(map(one, body)) + b"]" if isinstance(body, list) else one(body)

    return fault


def stretched_logs(node, deployment, stretch: StretchedChain) -> list[tuple[str, int, int]]:
    """(tx hash, log index, block number on the stretched chain) of every log of the contracts."""
    return sorted((log["transactionHash"].lower(), int(log["logIndex"], 16),
                   stretch.virtual(int(log["blockNumber"], 16))) for log in chain_logs(node, deployment, node.head()))


def assert_events_are_the_stretched_chains(node, deployment, stretch: StretchedChain) -> None:
    """Every log once, at its block on the stretched chain: nothing lost, nothing twice."""
    assert sorted(ChainEvent.objects.filter(chain="bsc").values_list("tx_hash", "log_index", "block_number")) == \
        stretched_logs(node, deployment, stretch)


def in_gap(stretch: StretchedChain, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The requested ranges lying wholly inside the empty stretch."""
    lo = max(p for p in stretch.positions if p < stretch.positions[-1] - GAP) + 1
    return [(frm, to) for frm, to in spans if lo <= frm and to < lo + GAP]


def get_logs_ranges(proxy) -> list[tuple[int, int]]:
    return [(int(c["params"][0]["fromBlock"], 16), int(c["params"][0]["toBlock"], 16)) for c in proxy.get_logs_calls()]


def test_sync_learns_the_providers_cap_from_its_refusal_and_crosses_an_empty_stretch_in_few_requests(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, stretched):
    refused = []
    proxy = faulty_rpc(capped(stretched, refused=refused), delay=0.01, stretch=stretched)
    through(chain_settings, deployment, tmp_path, proxy, in_flight=4)
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == stretched.head
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
    # The refusal named 5,000: the cap from then on. Only ranges already on their way when it came were refused.
    assert refused and len(refused) <= 4, refused
    provider = RpcProvider.objects.get(chain="bsc", role="primary")
    assert (provider.max_block_range, provider.max_block_range_source) == (RANGE_CAP, "learnt")
    assert provider.max_block_range_refusal == f"exceed maximum block range: {RANGE_CAP}"
    assert provider.state == "closed" and provider.failures == 0
    ranges = get_logs_ranges(proxy)
    last_refused = max(i for i, (frm, to) in enumerate(ranges) if to - frm + 1 > RANGE_CAP)
    assert all(to - frm + 1 <= RANGE_CAP for frm, to in ranges[last_refused + 1:]), "never asked wider again"
    # 100,000 empty blocks at 5,000 a request: 20; about ten more while the ranges grow from the busy blocks' 20 to
    # the cap (doubling at each answer: a couple of round trips); and the ranges already out when the refusal came,
    # each asked again within the cap. 2,000-block ranges growing twofold from one answer to the next (the old
    # logic) take over 55.
    crossing = in_gap(stretched, ranges)
    assert len(crossing) <= GAP // RANGE_CAP + 16, str([(f, t - f + 1) for f, t in crossing])
    assert result.batches < 2 * (GAP + TAIL) // RANGE_CAP


def _widths_in_block_order(proxy) -> list[int]:
    """The width of each range asked for, in block order (the order they were started in), the first ask of each."""
    first: dict[int, int] = {}
    for frm, to in get_logs_ranges(proxy):
        first.setdefault(frm, to - frm + 1)
    return [first[frm] for frm in sorted(first)]


def _never_more_than_doubled(widths: list[int]) -> bool:
    return all(width <= 2 * max(widths[:i]) for i, width in enumerate(widths) if i)


def test_ranges_from_a_provider_next_door_only_double_and_from_a_distant_one_grow_eightfold(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, stretched, monkeypatch):
    """From a node whose answers cost little, a range grown eightfold past a few empty blocks can land on a busy
    history (the sync benchmark's: 58,000 logs in one answer): there a range is never more than twice as wide as the
    widest before it. From a distant provider, where each request saved is a round trip, empty answers grow it
    eightfold."""
    from chain import fetch

    monkeypatch.setattr(fetch, "FAST_GROWTH_SECONDS", 60.0)  # every provider answers as if next door
    near = faulty_rpc(capped(stretched), stretch=stretched)
    through(chain_settings, deployment, tmp_path, near, in_flight=4)
    assert sync_chain("bsc", max_seconds=600).to_block == stretched.head
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
    widths = _widths_in_block_order(near)
    assert widths[0] <= fetch.FIRST_CHUNK_BLOCKS and _never_more_than_doubled(widths), widths

    local.reset_mirror()
    monkeypatch.setattr(fetch, "FAST_GROWTH_SECONDS", 0.0)  # every provider counts as distant
    far = faulty_rpc(capped(stretched), stretch=stretched)
    through(chain_settings, deployment, tmp_path, far, in_flight=4)
    assert sync_chain("bsc", max_seconds=600).to_block == stretched.head
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
    widths_far = _widths_in_block_order(far)
    assert not _never_more_than_doubled(widths_far), widths_far
    assert len(widths_far) < len(widths)


def test_sync_follows_the_range_a_provider_suggests_when_a_busy_stretch_passes_its_result_cap(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, stretched):
    refused = []
    proxy = faulty_rpc(capped(stretched, max_logs=100, refused=refused), stretch=stretched)
    through(chain_settings, deployment, tmp_path, proxy, in_flight=4)
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == stretched.head
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
    too_many = [blocks for kind, blocks in refused if kind == "logs"]
    assert too_many, "the busy stretch held more than 100 logs"
    # Each refusal's suggestion is asked next and answered: a busy range costs one refusal, not one per halving.
    answered_busy = [frm for frm, to in get_logs_ranges(proxy) if (frm, to) not in too_many]
    assert len(too_many) <= len(answered_busy)
    provider = RpcProvider.objects.get(chain="bsc", role="primary")
    assert provider.getlogs_splits_too_big == len(refused) and provider.failures == 0


def test_sync_keeps_fewer_requests_in_flight_once_the_provider_answers_429(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, stretched):
    capped_provider, limited = capped(stretched), []

    def at_most_two_at_once(body):
        """A plan that allows two requests at a time: a third one gets HTTP 429."""
        if isinstance(body, dict) and body.get("method") == "eth_getLogs" and proxy.in_flight > 2:
            limited.append(body["params"][0]["fromBlock"])
            return 429, b'{"jsonrpc": "2.0", "error": {"code": 429, "message": "Too Many Requests"}}', \
                {"Retry-After": "0.05"}
        return capped_provider(body)

    proxy = faulty_rpc(at_most_two_at_once, delay=0.02, stretch=stretched)
    through(chain_settings, deployment, tmp_path, proxy, in_flight=8)
    result = sync_chain("bsc", max_seconds=600)

    assert result.to_block == stretched.head
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
    window = get_client("bsc").window
    assert limited and window.halvings >= 1
    assert window.current() <= 3, "it keeps to about what the plan allows"
    get_logs = len(get_logs_ranges(proxy))
    assert len(limited) < get_logs / 3, (len(limited), get_logs)
    primary = RpcProvider.objects.get(chain="bsc", role="primary")
    assert primary.rate_limited == len(limited) and primary.failures == 0 and primary.state == "closed"


def test_sync_of_a_long_capped_history_gives_the_same_mirror_as_one_request_at_a_time_with_the_old_ranges(
        chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path, stretched):
    one = faulty_rpc(capped(stretched, max_logs=150), delay=0.005, stretch=stretched)
    through(chain_settings, deployment, tmp_path, one, in_flight=1, batch_blocks=2_000)
    before = sync_chain("bsc", max_seconds=600, rules=FetchRules.before_caps())
    expected = mirror_contents()
    assert one.max_in_flight == 1

    local.reset_mirror()
    many = faulty_rpc(capped(stretched, max_logs=150), delay=0.005, stretch=stretched)
    through(chain_settings, deployment, tmp_path, many, in_flight=8, batch_blocks=10_000)
    now = sync_chain("bsc", max_seconds=600)

    assert before.to_block == now.to_block == stretched.head and before.events == now.events
    assert len(many.requests) < len(one.requests) / 2, (len(many.requests), len(one.requests))
    got = mirror_contents()
    # The block hashes kept for the reorg check are those of the last transactions' blocks, which end where each
    # run's ranges did; every other table is the same row for row.
    assert {k: v for k, v in got.items() if k != "chain_block_hashes"} == \
        {k: v for k, v in expected.items() if k != "chain_block_hashes"}
    assert_events_are_the_stretched_chains(anvil_node, deployment, stretched)
