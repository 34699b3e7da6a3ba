"""sync_remote: the `sync` bench's history synced through a local proxy that plays a distant, capped provider
(50 ms added to every request, eth_getLogs refused above 10,000 logs): several requests in flight against one.

A third run through the same proxy with no added latency gives the rate this machine reaches when latency
costs nothing (`no_latency`): the issue's `limit` counts the latency as the only cost, so it is the rate a
sync with free decoding and writing would reach; `of_no_latency` shows how much of the latency is hidden."""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .common import bench_env, figure
from .sync import CpuSeconds, build_history

LATENCY = 0.05
MAX_LOGS = 10_000
IN_FLIGHT = 4


def say(msg: str) -> None:
    print(f"[bench sync_remote] {msg}", file=sys.stderr, flush=True)


class DistantProvider:
    """A threaded forwarder to anvil adding LATENCY to each request and refusing an eth_getLogs whose answer
    holds more than MAX_LOGS logs, with Infura's error. Counts requests (HTTP) and refusals."""

    def __init__(self, upstream: str):
        import requests

        self.latency = LATENCY
        local = threading.local()
        self.requests = self.get_logs = self.refused = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a provider behind TLS would

            def do_POST(self):  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                session = local.session
                answer = session.post(upstream, data=raw, headers={"Content-Type": "application/json"},
                                      timeout=300).content
                body = json.loads(raw)
                is_logs = isinstance(body, dict) and body.get("method") == "eth_getLogs"
                # Counting a marker each log carries once is enough, and cheap next to parsing megabytes.
                if is_logs and answer.count(b'"logIndex"') > MAX_LOGS:
                    query = body["params"][0]
                    answer = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), "error": {
                        "code": -32005, "message": f"query returned more than {MAX_LOGS} results. Try with this "
                                                   f"block range [{query['fromBlock']}, "
                                                   f"{query['toBlock']}]."}}).encode()
                    with lock:
                        outer.refused += 1
                with lock:
                    outer.requests += 1
                    outer.get_logs += is_logs
                time.sleep(outer.latency)  # on top of anvil's own time: the distance to the provider
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

    def take(self) -> dict[str, int]:
        out = {"requests": self.requests, "get_logs": self.get_logs, "refused": self.refused}
        self.requests = self.get_logs = self.refused = 0
        return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def main() -> None:
    env = bench_env("sync_remote")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-remote-"))
    env["CHAIN_DEPLOYMENT_FILE"] = str(tmp / "deployment.json")
    for key in ("BSC_RPC_URL", "BSC_RPC_FALLBACK", "BSC_ESCROW_CONTRACT", "BSC_ARBITRATOR_POOL", "BSC_START_BLOCK",
                "BSC_SYNC_MAX_IN_FLIGHT", "BSC_RPC_MAX_RPS"):
        env.pop(key, None)
        os.environ.pop(key, None)
    os.environ.update(env)
    import django

    django.setup()
    from backoffice import devservices

    proc, url = devservices.start_anvil("bsc", block_time="", extra=["--disable-block-gas-limit", "--prune-history"])
    try:
        remote(url, tmp)
    finally:
        proc.terminate()


def remote(url: str, tmp: Path) -> None:
    from django.conf import settings

    from chain import local
    from chain.rpc import reset_clients
    from chain.sync import sync_chain

    build_history(url, tmp)
    # The sync reads its URLs from the deployment file: point both providers at the distant one.
    path = tmp / "deployment.json"
    proxy = DistantProvider(url)
    data = json.loads(path.read_text())
    data["bsc"].update(rpc_url=proxy.url, rpc_fallback=proxy.url)
    path.write_text(json.dumps(data))

    def run(in_flight: int, latency: float = LATENCY) -> tuple[float, object, dict]:
        settings.CHAINS["bsc"]["max_in_flight"] = in_flight
        proxy.latency = latency
        reset_clients()
        local.reset_mirror()
        proxy.take()
        cpu = CpuSeconds()
        started = time.monotonic()
        result = sync_chain("bsc", max_seconds=10**9)
        seconds = time.monotonic() - started
        counts = {**proxy.take(), "cpu_seconds": cpu.used()}  # worker: the sync and the proxy's threads
        say(f"{in_flight} in flight, {latency * 1000:.0f} ms: {result.events} events, {result.batches} batches, "
            f"{seconds:.2f} s, {counts}")
        return seconds, result, counts

    try:
        base_seconds, base_result, base_counts = run(1)
        seconds, result, counts = run(IN_FLIGHT)
        free_seconds, free_result, _ = run(IN_FLIGHT, latency=0.0)
    finally:
        proxy.close()
    events = result.events
    assert events == base_result.events == free_result.events, (events, base_result.events, free_result.events)
    min_requests = math.ceil(events / MAX_LOGS)
    limit = events / (min_requests * LATENCY / IN_FLIGHT)
    figure("sync_remote_events_per_s", events / seconds, "events/s", higher_is_better=True,
           baseline=base_result.events / base_seconds, limit=limit, events=events, in_flight=IN_FLIGHT,
           seconds=round(seconds, 2), baseline_seconds=round(base_seconds, 2), min_requests=min_requests,
           no_latency=round(events / free_seconds, 1), of_no_latency=round(free_seconds / seconds, 3),
           requests=counts, baseline_requests=base_counts, latency_s=LATENCY, max_logs=MAX_LOGS)
