"""sync: historical event sync from anvil into PostgreSQL (events/s vs a naive sync and raw eth_getLogs),
its peak memory, and the live lag under a simulated market."""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from .common import bench_env, figure

EVENTS = 100_000
NAIVE_EVENTS = 5_000
# bulk_orders packs ~300 transactions into a block (anvil's per-block cost grows with its state), so
# ~400 events per block; the sync runs with its default, adaptive batching (see chain/sync.py).
LIVE_SECONDS = 60
LIVE_CONFIRMATIONS = 5


def say(msg: str) -> None:
    print(f"[bench sync] {msg}", file=sys.stderr, flush=True)


class PeakRss:
    """Samples this process's RSS in a thread."""

    def __init__(self):
        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self):
        self.peak = self.proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class CpuSeconds:
    """CPU seconds used from now on by this process (the worker), PostgreSQL and anvil: where the time goes.

    PostgreSQL's backends come and go (the sync's writer has its own connection): the postmaster's
    `children_*` times hold those it has reaped, so they are counted too (a backend alive at the start
    and gone by the end would count its earlier CPU as well; the sync starts none before it)."""

    GROUPS = {"worker": lambda p: p.pid == os.getpid(), "postgres": lambda p: p.name() == "postgres",
              "anvil": lambda p: p.name() == "anvil"}

    def __init__(self):
        self.start = self._sample()

    def _sample(self) -> dict[tuple[str, int], float]:
        out = {}
        for proc in psutil.process_iter():
            try:
                for group, match in self.GROUPS.items():
                    if match(proc):
                        times = proc.cpu_times()
                        out[(group, proc.pid)] = times.user + times.system
                        if group == "postgres" and proc.parent().name() != "postgres":  # the postmaster
                            out[("postgres", -proc.pid)] = times.children_user + times.children_system
            except psutil.Error:
                continue
        return out

    def used(self) -> dict[str, float]:
        totals = dict.fromkeys(self.GROUPS, 0.0)
        for key, value in self._sample().items():
            totals[key[0]] += value - self.start.get(key, 0.0)
        return {group: round(total, 2) for group, total in totals.items()}


def main() -> None:
    env = bench_env("sync")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    env["CHAIN_DEPLOYMENT_FILE"] = str(tmp / "deployment.json")
    for key in ("BSC_RPC_URL", "BSC_RPC_FALLBACK", "BSC_ESCROW_CONTRACT", "BSC_ARBITRATOR_POOL", "BSC_START_BLOCK"):
        env.pop(key, None)
        os.environ.pop(key, None)
    os.environ.update(env)
    import django

    django.setup()
    from backoffice import devservices

    procs = []
    try:
        proc, url = devservices.start_anvil("bsc", block_time="",
                                            extra=["--disable-block-gas-limit", "--prune-history"])
        procs.append(proc)
        historical(url, tmp)
        proc2, url2 = devservices.start_anvil("bsc", block_time="0.75")
        procs.append(proc2)
        live(url2, tmp)
    finally:
        for p in procs:
            p.terminate()


def build_history(url: str, tmp: Path):
    """Deploy on the anvil at `url` and create orders until the contracts hold EVENTS events; prints the
    generation figure. Returns (w3, deployment, get_logs(frm, to) over plain eth_getLogs)."""
    import requests
    from web3 import Web3

    from chain import local
    from chain.market_bulk import BulkMarketDriver

    # eoa custody: the bench measures the sync, and a Safe's setup transactions would only add blocks to wait for.
    deployment = local.deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}},
                                    path=tmp / "deployment.json")["bsc"]
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 120}))
    driver = BulkMarketDriver(w3, deployment, seed=42, url=url)
    driver.setup()
    addresses = [deployment["escrow"].lower(), deployment["arbitrator_pool"].lower()]
    session = requests.Session()

    def get_logs(frm: int, to: int) -> list:
        body = session.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_getLogs", "params": [
            {"fromBlock": hex(frm), "toBlock": hex(to), "address": addresses}]}, timeout=300).json()
        return body["result"]

    started, events, orders = time.monotonic(), 0, 0
    while events < EVENTS:
        orders += driver.bulk_orders(10_000, per_block=300, progress=say)
        head = w3.eth.block_number
        events = len(get_logs(deployment["deploy_block"], head))
        say(f"{orders} orders, {events} events, {head} blocks, {time.monotonic() - started:.0f} s")
    gen_seconds = time.monotonic() - started
    head = w3.eth.block_number
    blocks = head - deployment["deploy_block"] + 1
    figure("sync_bulk_orders_events_per_s", events / gen_seconds, "events/s", higher_is_better=True,
           orders=orders, events=events, blocks=blocks, seconds=round(gen_seconds, 1))
    return w3, deployment, get_logs


def historical(url: str, tmp: Path) -> None:
    from chain import local
    from chain.sync import sync_chain

    w3, deployment, get_logs = build_history(url, tmp)

    # the sync under test, from an empty mirror
    local.reset_mirror()
    profile = os.environ.get("BENCH_PROFILE")
    cpu = CpuSeconds()
    with PeakRss() as rss:
        t0 = time.monotonic()
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            result = prof.runcall(sync_chain, "bsc", max_seconds=10**9)
        else:
            result = sync_chain("bsc", max_seconds=10**9)
        seconds = time.monotonic() - t0
    cpu_split = cpu.used()
    if profile:
        pstats.Stats(prof, stream=sys.stderr).sort_stats("cumulative").print_stats(30)
        pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime").print_stats(20)
    say(f"sync: {result.events} events, {result.batches} batches, {result.malformed} malformed, {seconds:.1f} s")
    rate = result.events / seconds

    # limit: the same logs over the very ranges the sync fetched (its default, adaptive batching),
    # with plain eth_getLogs and JSON parsing only.
    t0, got = time.monotonic(), 0
    for frm, to in result.ranges:
        got += len(get_logs(frm, to))
    limit = got / (time.monotonic() - t0)
    say(f"limit: {got} logs in {len(result.ranges)} requests, {limit:.0f} events/s")

    baseline = naive_sync(w3, deployment, NAIVE_EVENTS)
    figure("sync_events_per_s", rate, "events/s", higher_is_better=True, baseline=baseline, limit=limit,
           events=result.events, batches=result.batches, seconds=round(seconds, 2), cpu_seconds=cpu_split)
    figure("sync_peak_memory_mb", rss.peak / 2**20, "MB", limit=500.0)


def naive_sync(w3, deployment: dict, n: int) -> float:
    """web3 decoding per log and one ORM save per event (ChainEvent, Order, UserProfile): the naive way."""
    from django.db import transaction
    from eth_utils import event_abi_to_log_topic

    from chain import local
    from chain.deploy import get_contract
    from chain.events import Log
    from chain.mirror import TokenBook, reduce_order, ts
    from chain.models import ChainEvent, Order, UserProfile

    local.reset_mirror()
    escrow = get_contract(w3, "P2PEscrow", deployment["escrow"])
    pool = get_contract(w3, "ArbitratorPool", deployment["arbitrator_pool"])
    events = {}
    for contract, kind in ((escrow, "escrow"), (pool, "pool")):
        for item in contract.abi:
            if item["type"] == "event":
                topic = "0x" + event_abi_to_log_topic(item).hex()
                events[(contract.address.lower(), topic)] = (getattr(contract.events, item["name"]), kind)
    decimals = {a.lower(): int(get_contract(w3, "TestToken", a).functions.decimals().call())
                for a in deployment["tokens"].values()}
    symbols = {a.lower(): s for s, a in deployment["tokens"].items()}
    tokens = TokenBook({a: (symbols[a], d) for a, d in decimals.items()})
    columns = {f.column: f.attname for f in Order._meta.concrete_fields}

    t0 = time.monotonic()
    raw = w3.eth.get_logs({"fromBlock": deployment["deploy_block"], "toBlock": "latest",
                           "address": [escrow.address, pool.address]})[:n]
    done = 0
    for entry in raw:
        ev, kind = events[(entry["address"].lower(), "0x" + entry["topics"][0].hex().removeprefix("0x"))]
        decoded = ev().process_log(entry)
        block = w3.eth.get_block(entry["blockNumber"]) if "blockTimestamp" not in entry else None
        stamp = entry.get("blockTimestamp") or block["timestamp"]
        when = int(stamp, 16) if isinstance(stamp, str) else int(stamp)
        args = {k: (v.lower() if isinstance(v, str) and v.startswith("0x") else v) for k, v in decoded["args"].items()}
        log = Log(entry["blockNumber"], "0x" + entry["blockHash"].hex().removeprefix("0x"), when,
                  "0x" + entry["transactionHash"].hex().removeprefix("0x"), entry["logIndex"],
                  entry["address"].lower(), kind, decoded["event"], args)
        with transaction.atomic():
            ChainEvent.objects.create(chain="bsc", block_number=log.block_number, block_hash=log.block_hash,
                                      block_time=ts(when), tx_hash=log.tx_hash, log_index=log.log_index,
                                      address=log.address, contract=kind, event=log.name,
                                      order_id=args.get("orderId"), args={k: str(v) for k, v in args.items()})
            if kind == "escrow" and "orderId" in args:
                order = Order.objects.filter(chain="bsc", onchain_id=args["orderId"]).first()
                state = {c: getattr(order, a) for c, a in columns.items()} if order else None
                new = reduce_order(state, log, "bsc", tokens)
                if new is not None:
                    if order is None:
                        for wallet in (new["buyer_wallet"], new["seller_wallet"]):
                            UserProfile.objects.get_or_create(wallet=wallet, defaults={"created_at": ts(when)})
                        order = Order()
                    for c, a in columns.items():
                        if c in new:
                            setattr(order, a, new[c])
                    order.save()
        done += 1
    rate = done / (time.monotonic() - t0)
    say(f"naive: {done} events, {rate:.0f} events/s")
    local.reset_mirror()
    return rate


def live(url: str, tmp: Path) -> None:
    """simulate_market on 0.75 s blocks while the sync runs every 3 s like beat; lag beyond the confirmations."""
    from web3 import Web3

    from chain import local
    from chain.market import MarketDriver
    from chain.models import EventSyncCursor
    from chain.sync import sync_chain

    local.reset_mirror()
    deployment = local.deploy_local({"bsc": {"rpc_url": url, "confirmations": LIVE_CONFIRMATIONS, "custody": "eoa"}},
                                    path=tmp / "deployment.json")["bsc"]
    w3 = Web3(Web3.HTTPProvider(url))
    driver = MarketDriver(w3, deployment, seed=7, url=url)
    driver.setup()
    stop = threading.Event()

    def run_market():
        while not stop.is_set():
            driver.step()

    market = threading.Thread(target=run_market, daemon=True)
    market.start()
    lags, events, t_end = [], 0, time.monotonic() + LIVE_SECONDS
    try:
        while time.monotonic() < t_end:
            tick = time.monotonic()
            events += sync_chain("bsc").events
            head = w3.eth.block_number
            cursor = EventSyncCursor.objects.get(chain="bsc")
            lags.append(max(0, head - LIVE_CONFIRMATIONS - cursor.last_block))
            time.sleep(max(0.0, 3.0 - (time.monotonic() - tick)))
    finally:
        stop.set()
        market.join(timeout=60)
    lags.sort()
    p95 = lags[min(len(lags) - 1, int(0.95 * len(lags)))]
    say(f"live: {len(lags)} syncs, {events} events, {driver.steps} market steps, lags {lags}")
    figure("live_lag_p95_blocks", p95, "blocks", confirmations=LIVE_CONFIRMATIONS, samples=len(lags), events=events,
           market_steps=driver.steps)
