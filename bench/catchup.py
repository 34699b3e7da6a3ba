"""catchup: the first sync of a marketplace with a long, sparse history, through a distant provider that caps
eth_getLogs by block range and by result count (issue 26).

History: about 50,000 events of ours (orders through their whole lifecycle, 100 transactions a block) on a
throwaway anvil, spread by chain.stretched over 2,419,200 blocks, 21 days of BSC's 0.75 s blocks: five busy days
whose trades come in one burst of half an hour, quiet days, an empty week and two more empty days. anvil cannot mine
millions of empty blocks (anvil_mine slows down with every block: 5,000 take half a minute), so the proxy serves
the real node's blocks at other numbers, every block between them empty.

Provider (the proxy, in a process of its own, as a provider is another machine; here it shares the two cores):
50 ms added to every request; eth_getLogs over more than 5,000 blocks refused as BSC's own nodes refuse it
("exceed maximum block range: 5000", -32000); an answer of more than 10,000 logs refused as Infura does, with the
range it suggests (-32005 "query returned more than 10000 results. Try with this block range [from, to]", `to` the
last block before the 10,001st log).

Figures: `catchup_seconds`, the median of three runs of the sync with its defaults (at most
`<PREFIX>_SYNC_MAX_IN_FLIGHT` = 8 in flight, the provider's cap learnt from its refusal in each run, nothing
configured), and its requests. `baseline`: the same sync one request at a time with the range logic it had before
(chain.fetch.FetchRules.before_caps(): 2,000-block ranges, twofold growth, halving on any refusal, a header for
each range's last block). `limit`: the fewest eth_getLogs the two caps allow over this history (greedy: each
request the widest range within 5,000 blocks and 10,000 logs) × 50 ms / 8 in flight. Targets: ratio ≥ 4,
of_limit ≥ 0.7.
"""
from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import random
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from chain.stretched import BLOCK_NUMBER

from .common import bench_env, figure
from .sync import CpuSeconds

EVENTS = 50_000
PER_BLOCK = 100  # transactions per real block
LATENCY = 0.05
MAX_BLOCKS = 5_000  # BSC's own nodes
MAX_LOGS = 10_000  # Infura
DAY_BLOCKS = 115_200  # a day of 0.75 s blocks
BURST_BLOCKS = 2_400  # half an hour: a busy day's trades
# Each day's share of the events; 0 is an empty day. Days with a weight of 4 or more are busy (one burst).
DAYS = [8, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 6, 1, 0.3, 10, 0.5, 0, 0, 5, 1, 7, 0.4]
SEED = 26
RUNS = 3  # of the sync with its defaults; the figure is their median


def say(msg: str) -> None:
    print(f"[bench catchup] {msg}", file=sys.stderr, flush=True)


def layout(counts: list[int], base: int) -> tuple[list[int], int]:
    """Virtual numbers for real blocks base+1, base+2, … holding `counts` logs each, and the head: each block goes to
    the day its share of the events falls in; a busy day's blocks into one half-hour burst, a quiet day's anywhere."""
    rng = random.Random(SEED)
    total, weights = sum(counts) or 1, sum(DAYS)
    bounds, acc = [], 0.0
    for weight in DAYS:
        acc += weight
        bounds.append(acc / weights)
    per_day: list[list[int]] = [[] for _ in DAYS]
    seen = 0
    for i, n in enumerate(counts):
        share = (seen + n / 2) / total
        seen += n
        day = next((d for d, bound in enumerate(bounds) if share < bound and DAYS[d]), len(DAYS) - 1)
        per_day[day].append(i)
    positions = [0] * len(counts)
    for day, blocks in enumerate(per_day):
        start = base + 1 + day * DAY_BLOCKS
        if DAYS[day] >= 4 and len(blocks) <= BURST_BLOCKS:
            offset = start + rng.randrange(DAY_BLOCKS - BURST_BLOCKS)
            spots = sorted(rng.sample(range(BURST_BLOCKS), len(blocks)))
        else:
            offset, spots = start, sorted(rng.sample(range(DAY_BLOCKS), len(blocks)))
        for i, spot in zip(blocks, spots, strict=True):
            positions[i] = offset + spot
    return positions, base + len(DAYS) * DAY_BLOCKS


def fewest_requests(logs_at: dict[int, int], start: int, head: int) -> int:
    """The fewest eth_getLogs covering [start, head] within MAX_BLOCKS blocks and MAX_LOGS logs each (greedy: each
    request as wide as both caps allow, which no other cover beats)."""
    busy = sorted(logs_at)
    requests, at, i = 0, start, 0
    while at <= head:
        end, logs = min(at + MAX_BLOCKS - 1, head), 0
        while i < len(busy) and busy[i] <= end:
            if logs + logs_at[busy[i]] > MAX_LOGS:
                end = busy[i] - 1
                break
            logs += logs_at[busy[i]]
            i += 1
        requests += 1
        at = end + 1
    return requests


class CappedProvider:
    """The distant provider: the stretched chain behind LATENCY, refusing eth_getLogs over MAX_BLOCKS blocks or
    MAX_LOGS logs in real providers' words. Counts HTTP requests, calls by method, and refusals."""

    def __init__(self, stretch):
        self.stretch = stretch
        self.counts: Counter = Counter()
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a provider behind TLS would

            def setup(self):
                super().setup()
                # Headers and body go out in two writes: without this, Nagle's algorithm holds the body until the
                # client's delayed ACK of the headers (40 ms on Linux), which no provider's server adds.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self):  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = outer.answer(json.loads(raw))
                outer.count("http_requests")
                time.sleep(LATENCY)  # on top of anvil's own time: the distance to the provider
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def take(self) -> dict[str, int]:
        with self._lock:
            out, self.counts = dict(self.counts), Counter()
        return out

    def answer(self, body) -> bytes:
        if isinstance(body, list):
            return b"[" + b",".join(self.answer(item) for item in body) + b"]"
        if body.get("method") == "bench_take_counts":  # the benchmark's own question, not counted
            return json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "result": self.take()}).encode()
        self.count(body.get("method", "?"))
        if body.get("method") != "eth_getLogs":
            return self.stretch.answer(body)
        query = body["params"][0]
        frm, to = int(query["fromBlock"], 16), int(query["toBlock"], 16)
        if to - frm + 1 > MAX_BLOCKS:
            self.count("refused_range")
            return self._error(body, -32000, f"exceed maximum block range: {MAX_BLOCKS}")
        answer = self.stretch.answer(body)
        if answer.count(b'"logIndex"') > MAX_LOGS:
            self.count("refused_logs")
            # The 10,001st log's block, found without decoding the whole answer: a provider's refusal costs the
            # requests other clients have in flight nothing, and a parse of ~10 MB here would hold this process's
            # interpreter (every request it is serving) for about a tenth of a second.
            first_over = int(next(itertools.islice(BLOCK_NUMBER.finditer(answer), MAX_LOGS, None))[1], 16)
            end = max(frm, first_over - 1)
            return self._error(body, -32005, f"query returned more than {MAX_LOGS} results. Try with this block "
                                             f"range [{hex(frm)}, {hex(end)}].")
        return answer

    @staticmethod
    def _error(body, code: int, message: str) -> bytes:
        error = {"code": code, "message": message}
        return json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "error": error}).encode()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_provider(upstream: str, base: int, positions: list[int], head: int, conn) -> None:
    """The provider's process: serve the stretched chain until terminated; its URL goes back through `conn`."""
    from chain.stretched import StretchedChain

    proxy = CappedProvider(StretchedChain(upstream, base, positions, head))
    conn.send(proxy.url)
    threading.Event().wait()


def provider_counts(url: str) -> dict[str, int]:
    """What the provider counted since it was last asked (and it starts again from nothing)."""
    import requests

    return requests.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "bench_take_counts"}, timeout=10).json()[
        "result"]


def main() -> None:
    env = bench_env("catchup")
    tmp = Path(tempfile.mkdtemp(prefix="bench-catchup-"))
    env["CHAIN_DEPLOYMENT_FILE"] = str(tmp / "deployment.json")
    for key in ("BSC_RPC_URL", "BSC_RPC_FALLBACK", "BSC_ESCROW_CONTRACT", "BSC_ARBITRATOR_POOL", "BSC_START_BLOCK",
                "BSC_SYNC_MAX_IN_FLIGHT", "BSC_SYNC_BATCH_BLOCKS", "BSC_RPC_MAX_RPS", "BSC_RPC_MAX_BLOCK_RANGE",
                "BSC_RPC_FALLBACK_MAX_BLOCK_RANGE"):
        env.pop(key, None)
        os.environ.pop(key, None)
    os.environ.update(env)
    import django

    django.setup()
    from backoffice import devservices

    proc, url = devservices.start_anvil("bsc", block_time="", extra=["--disable-block-gas-limit", "--prune-history"])
    try:
        catch_up(url, tmp)
    finally:
        proc.terminate()


def build(url: str, tmp: Path) -> tuple[dict, list[dict]]:
    """Deploy, then orders until the contracts hold EVENTS events; returns the deployment and their logs."""
    import requests
    from web3 import Web3

    from chain import local
    from chain.market_bulk import BulkMarketDriver

    deployment = local.deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}},
                                    path=tmp / "deployment.json")["bsc"]
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
    driver = BulkMarketDriver(w3, deployment, seed=SEED, url=url)
    driver.setup()
    addresses = [deployment["escrow"].lower(), deployment["arbitrator_pool"].lower()]
    session = requests.Session()
    started, logs, orders = time.monotonic(), [], 0
    while len(logs) < EVENTS:
        orders += driver.bulk_orders(min(5_000, max(500, (EVENTS - len(logs)) // 3)), per_block=PER_BLOCK)
        logs = session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [
            {"fromBlock": hex(deployment["deploy_block"]), "toBlock": "latest", "address": addresses}]},
            timeout=300).json()["result"]
        say(f"{orders} orders, {len(logs)} events, {w3.eth.block_number} blocks, {time.monotonic() - started:.0f} s")
    return deployment, logs


def catch_up(url: str, tmp: Path) -> None:
    import psutil
    from django.conf import settings
    from web3 import Web3

    from chain import local
    from chain.fetch import FetchRules
    from chain.models import RpcProvider
    from chain.rpc import get_client, reset_clients
    from chain.stretched import StretchedChain
    from chain.sync import sync_chain

    deployment, logs = build(url, tmp)
    base, real_head = deployment["deploy_block"], Web3(Web3.HTTPProvider(url)).eth.block_number
    per_block = Counter(int(log["blockNumber"], 16) for log in logs)
    positions, head = layout([per_block[r] for r in range(base + 1, real_head + 1)], base)
    stretch = StretchedChain(url, base, positions, head)
    logs_at = Counter({stretch.virtual(r): n for r, n in per_block.items()})
    min_requests = fewest_requests(logs_at, base, head)
    days = Counter((b - base - 1) // DAY_BLOCKS for b in logs_at.elements())
    say(f"{len(logs)} events in {len(per_block)} real blocks, spread over {head - base + 1:,} blocks; events per "
        f"day {[days.get(d, 0) for d in range(len(DAYS))]}; fewest eth_getLogs the caps allow: {min_requests}")

    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    provider = multiprocessing.get_context("spawn").Process(
        target=serve_provider, args=(url, base, positions, head, theirs), daemon=True)
    provider.start()
    proxy_url = ours.recv()
    path = tmp / "deployment.json"
    data = json.loads(path.read_text())
    data["bsc"].update(rpc_url=proxy_url, rpc_fallback=proxy_url)
    path.write_text(json.dumps(data))
    defaults = {k: settings.CHAINS["bsc"][k] for k in ("batch_blocks", "max_in_flight")}

    def run(label: str, rules: FetchRules, **chain) -> tuple[float, object, dict]:
        settings.CHAINS["bsc"].update(defaults, **chain)
        reset_clients()
        local.reset_mirror()
        provider_counts(proxy_url)
        cpu, provider_cpu = CpuSeconds(), psutil.Process(provider.pid).cpu_times()
        started = time.monotonic()
        result = sync_chain("bsc", max_seconds=10**9, rules=rules)
        seconds = time.monotonic() - started
        provider_cpu = sum(psutil.Process(provider.pid).cpu_times()[:2]) - sum(provider_cpu[:2])
        counts = {**provider_counts(proxy_url), "cpu_seconds": {**cpu.used(), "provider": round(provider_cpu, 2)},
                  "window_at_end": get_client("bsc").window.current()}
        say(f"{label}: {result.events} events to block {result.to_block}, {result.batches} batches, {seconds:.2f} s, "
            f"{counts}")
        assert result.to_block == head and result.events == len(logs), (result.to_block, head, result.events)
        return seconds, result, counts

    try:
        base_seconds, _, base_counts = run("baseline: one in flight, the older ranges", FetchRules.before_caps(),
                                           batch_blocks=2_000, max_in_flight=1)
        # The machine's two cores are shared with the provider, anvil and PostgreSQL, and one run's time varies by
        # about a tenth: the median of RUNS, each from an empty mirror and a client that knows no cap yet.
        runs = sorted((run(f"the sync's defaults, run {i + 1} of {RUNS}", FetchRules()) for i in range(RUNS)),
                      key=lambda r: r[0])
        seconds, _, counts = runs[len(runs) // 2]
        learnt = RpcProvider.objects.get(chain="bsc", role="primary")
    finally:
        provider.terminate()
    in_flight = defaults["max_in_flight"]
    limit = min_requests * LATENCY / in_flight
    figure("catchup_seconds", seconds, "s", baseline=base_seconds, limit=limit, runs=[round(r[0], 2) for r in runs],
           blocks=head - base + 1,
           events=len(logs), requests=counts, baseline_requests=base_counts, min_requests=min_requests,
           in_flight=in_flight, batch_blocks=defaults["batch_blocks"],
           learnt_max_block_range=[learnt.max_block_range, learnt.max_block_range_refusal],
           provider={"latency_s": LATENCY, "max_block_range": MAX_BLOCKS, "max_logs": MAX_LOGS})
