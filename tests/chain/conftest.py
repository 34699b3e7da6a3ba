"""Fixtures for the chain mirror tests: a real anvil per module, the contracts deployed, a fast market.

The market generator sends batched `eth_sendTransaction`s with automine off and mines them in
chunks, so a thousand orders through every state take seconds, not minutes. It talks to the node
directly (not through `chain.rpc`), so the sync under test never shares code with its own oracle.
"""
from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from eth_abi import encode as abi_encode
from eth_utils import keccak

from backoffice.devservices import running_anvil

DAY = 24 * 60 * 60
TX_GAS = 600_000
STAKE = 10**17


def selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


def calldata(signature: str, *args) -> str:
    types = signature[signature.index("(") + 1:-1]
    types = [t for t in types.split(",") if t]
    return selector(signature) + (abi_encode(types, list(args)).hex() if types else "")


def word_address(word: str) -> str:
    return "0x" + word[-40:].lower()


class RpcFailed(AssertionError):
    pass


class Node:
    """Plain JSON-RPC to one anvil: the tests' own view of the chain."""

    def __init__(self, url: str):
        self.url = url
        self.session = requests.Session()
        self.accounts: list[str] = self.call("eth_accounts", [])

    def call(self, method: str, params: list | None = None):
        body = self.session.post(self.url, json={"jsonrpc": "2.0", "id": 1, "method": method,
                                                 "params": params or []}, timeout=60).json()
        if "error" in body:
            raise RpcFailed(f"{method}: {body['error']}")
        return body["result"]

    def batch(self, calls: list[tuple[str, list]]) -> list:
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        body = self.session.post(self.url, json=payload, timeout=120).json()
        by_id = {item["id"]: item for item in body}
        errors = [by_id[i]["error"] for i in range(len(calls)) if "error" in by_id[i]]
        if errors:
            raise RpcFailed(f"{len(errors)} of {len(calls)} calls failed, first: {errors[0]}")
        return [by_id[i]["result"] for i in range(len(calls))]

    def head(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> None:
        self.call("anvil_mine", [hex(blocks)])

    def snapshot(self) -> str:
        return self.call("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        assert self.call("evm_revert", [snapshot_id]) is True

    def automine(self, on: bool) -> None:
        self.call("evm_setAutomine", [on])

    def increase_time(self, seconds: int) -> None:
        self.call("evm_increaseTime", [seconds])
        self.mine()

    def get_logs(self, from_block: int, to_block: int, addresses: list[str], topics: list | None = None) -> list[dict]:
        query = {"fromBlock": hex(from_block), "toBlock": hex(to_block), "address": addresses}
        if topics:
            query["topics"] = topics
        return self.call("eth_getLogs", [query])

    def send(self, txs: list[tuple[str, str, str, int]], *, per_block: int = 100,
             expect_success: bool = True) -> list[dict]:
        """Send (from, to, data, value) transactions with explicit nonces, mining `per_block` per block.

        Explicit nonces: anvil handles a JSON-RPC batch concurrently, so its own nonce choice races.
        Returns the receipts; by default every transaction must succeed.
        """
        if not txs:
            return []
        senders = sorted({tx[0] for tx in txs})
        nonces = dict(zip(senders, (int(n, 16) for n in self.batch(
            [("eth_getTransactionCount", [s, "pending"]) for s in senders])), strict=True))
        hashes: list[str] = []
        self.automine(False)
        try:
            for start in range(0, len(txs), per_block):
                calls = []
                for sender, to, data, value in txs[start:start + per_block]:
                    calls.append(("eth_sendTransaction", [{
                        "from": sender, "to": to, "data": data, "value": hex(value), "gas": hex(TX_GAS),
                        "nonce": hex(nonces[sender])}]))
                    nonces[sender] += 1
                hashes += self.batch(calls)
                self.mine()
        finally:
            self.automine(True)
        receipts = self.batch([("eth_getTransactionReceipt", [h]) for h in hashes])
        if expect_success:
            failed = [r["transactionHash"] for r in receipts if r is None or r["status"] != "0x1"]
            assert not failed, f"{len(failed)} market transactions reverted, first {failed[0]}"
        return receipts


@dataclass
class Deployment:
    url: str
    path: Path
    data: dict

    @property
    def escrow(self) -> str:
        return self.data["escrow"].lower()

    @property
    def pool(self) -> str:
        return self.data["arbitrator_pool"].lower()

    @property
    def tokens(self) -> dict[str, str]:
        return {symbol: address.lower() for symbol, address in self.data["tokens"].items()}

    @property
    def deploy_block(self) -> int:
        return int(self.data["deploy_block"])

    def write_variant(self, path: Path, **overrides) -> Path:
        """Another deployment file for the same contracts (other URLs, other confirmations)."""
        path.write_text(json.dumps({"bsc": {**self.data, **overrides}}, indent=2))
        return path


@dataclass
class MarketSummary:
    orders: int = 0
    fates: dict[int, str] = field(default_factory=dict)
    arbitrators: list[str] = field(default_factory=list)
    first_block: int = 0
    last_block: int = 0
    phase_blocks: dict[str, int] = field(default_factory=dict)


class Market:
    """Drives the escrow through every order state from many wallets (automine off, batched)."""

    FATES = ("funded", "delivered", "completed", "cancelled", "disputed", "resolved_buyer",
             "resolved_seller", "expired", "auto_released", "owner_resolved")

    def __init__(self, node: Node, deployment: Deployment, *, seed: int = 7):
        self.node, self.d = node, deployment
        self.rng = random.Random(seed)
        accounts = [a.lower() for a in node.accounts]
        self.owner = accounts[0]
        self.arbitrators = accounts[2:8]
        self.spare_arbitrator = accounts[8]
        self.traders = accounts[10:36]
        self.spare = accounts[36:40]  # never trade in the market: free for reorg tests

    def esc(self, sender: str, signature: str, *args, value: int = 0):
        return (sender, self.d.escrow, calldata(signature, *args), value)

    def fund_wallets(self, wallets: list[str]) -> None:
        txs = []
        for wallet in wallets:
            for token in self.d.tokens.values():
                txs.append((wallet, token, calldata("mint(address,uint256)", wallet, 10**40), 0))
                txs.append((wallet, token, calldata("approve(address,uint256)", self.d.escrow, 2**256 - 1), 0))
        self.node.send(txs, per_block=500)

    def create_orders(self, pairs: list[tuple[str, str, str, int]], per_block: int = 100) -> list[dict]:
        """(buyer, seller, token, raw amount) → the OrderCreated logs, in order id order."""
        before = self.node.head()
        self.node.send([self.esc(b, "createOrder(address,address,uint256)", s, t, a) for b, s, t, a in pairs],
                       per_block=per_block)
        logs = self.node.get_logs(before + 1, self.node.head(), [self.d.escrow],
                                  [topic("OrderCreated(uint256,address,address,address,uint256,uint256,uint64)")])
        return sorted(logs, key=lambda log: int(log["topics"][1], 16))

    def random_pairs(self, n: int, traders: list[str] | None = None) -> list[tuple[str, str, str, int]]:
        traders = traders or self.traders
        tokens = [(self.d.tokens["USDT"], 18), (self.d.tokens["USDC"], 6)]
        pairs = []
        for _ in range(n):
            buyer, seller = self.rng.sample(traders, 2)
            token, decimals = self.rng.choice(tokens)
            amount = self.rng.randint(1, 50_000) * 10**decimals + self.rng.randint(0, 10**decimals - 1)
            pairs.append((buyer, seller, token, amount))
        return pairs

    def run(self, n_orders: int) -> MarketSummary:
        node, rng = self.node, self.rng
        summary = MarketSummary(first_block=node.head() + 1)
        self.fund_wallets(self.traders)
        node.send([(a, self.d.pool, selector("register()"), STAKE * (i + 1)) for i, a in enumerate(self.arbitrators)])
        summary.arbitrators = list(self.arbitrators)

        created = self.create_orders(self.random_pairs(n_orders))
        parties = {int(log["topics"][1], 16): (word_address(log["topics"][2]), word_address(log["topics"][3]))
                   for log in created}
        summary.orders = len(parties)
        fate = {oid: self.FATES[oid % len(self.FATES)] for oid in parties}
        summary.fates = fate
        ids = lambda *names: [oid for oid in sorted(parties) if fate[oid] in names]  # noqa: E731
        buyer = lambda oid: parties[oid][0]  # noqa: E731
        seller = lambda oid: parties[oid][1]  # noqa: E731

        summary.phase_blocks["deliver"] = node.head() + 1
        txs = [self.esc(seller(o), "markDelivered(uint256)", o)
               for o in ids("delivered", "completed", "resolved_buyer", "auto_released")]
        txs += [self.esc(seller(o), "cancelOrder(uint256)", o) for o in ids("cancelled")]
        rng.shuffle(txs)
        node.send(txs)

        summary.phase_blocks["dispute"] = node.head() + 1
        cids = ["bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
                "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "", "not a cid {\"x\"}", "ünïcødé-evidence-✓"]
        txs = [self.esc(buyer(o), "confirmReceipt(uint256)", o) for o in ids("completed")]
        opened_by = {o: buyer(o) for o in ids("disputed", "resolved_seller")}
        opened_by.update({o: seller(o) for o in ids("resolved_buyer", "owner_resolved")})
        txs += [self.esc(who, "openDispute(uint256,string)", o, cids[i % len(cids)])
                for i, (o, who) in enumerate(sorted(opened_by.items()))]
        rng.shuffle(txs)
        node.send(txs)

        disputed = node.get_logs(summary.phase_blocks["dispute"], node.head(), [self.d.escrow],
                                 [topic("OrderDisputed(uint256,address,address,uint64,string)")])
        arbitrator_of = {int(log["topics"][1], 16): word_address(log["topics"][3]) for log in disputed}

        summary.phase_blocks["resolve"] = node.head() + 1
        txs = [self.esc(seller(o), "submitEvidence(uint256,string)", o, f"bafyevidence{o:08d}")
               for o in ids("resolved_seller", "disputed")[::2]]
        node.send(txs)
        txs = [self.esc(arbitrator_of[o], "resolveDispute(uint256,bool)", o, True) for o in ids("resolved_buyer")]
        txs += [self.esc(arbitrator_of[o], "resolveDispute(uint256,bool)", o, False) for o in ids("resolved_seller")]
        rng.shuffle(txs)
        node.send(txs)

        # Four days later: seller deadlines (1 day), buyer deadlines (3 days), dispute deadlines (3 days) passed.
        node.increase_time(4 * DAY)
        summary.phase_blocks["timeouts"] = node.head() + 1
        # One penalty is enough to deactivate this one, whatever the market's size.
        first_owner_case = ids("owner_resolved")[0]
        node.send([(self.owner, self.d.pool, calldata("setReputation(address,uint256)",
                                                      arbitrator_of[first_owner_case], 12), 0)])
        txs = [self.esc(self.owner, "autoExpireOrder(uint256)", o) for o in ids("expired")]
        txs += [self.esc(self.traders[o % len(self.traders)], "autoReleaseToSeller(uint256)", o)
                for o in ids("auto_released")]
        txs += [self.esc(self.owner, "ownerResolveDispute(uint256,bool)", o, bool(o % 2))
                for o in ids("owner_resolved")]
        rng.shuffle(txs)
        node.send(txs)

        # Arbitrator life: an override, a comeback, and one who joins and leaves.
        summary.phase_blocks["arbitrators"] = node.head() + 1
        pool = self.d.pool
        node.send([(self.owner, pool, calldata("setReputation(address,uint256)", self.arbitrators[0], 60), 0)])
        node.send([(self.arbitrators[0], pool, selector("register()"), STAKE)], expect_success=False)
        node.send([(self.spare_arbitrator, pool, selector("register()"), STAKE)])
        node.send([(self.spare_arbitrator, pool, selector("deregister()"), 0)])
        summary.arbitrators.append(self.spare_arbitrator)
        summary.last_block = node.head()
        return summary


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def anvil_node():
    # Automine (one block per transaction) unless a test turns it off; a big gas limit lets a
    # hundred escrow transactions share one block.
    with running_anvil("bsc", block_time="", extra=["--gas-limit", "1000000000"]) as (_proc, url):
        yield Node(url)


@pytest.fixture(scope="module")
def deployment(anvil_node, tmp_path_factory) -> Deployment:
    from chain.local import deploy_local

    path = tmp_path_factory.mktemp("deployment") / "deployment.json"
    # Account 0 stays the owner: the market below sends the owner's calls from it.
    data = deploy_local({"bsc": {"rpc_url": anvil_node.url, "confirmations": 0, "custody": "eoa"}}, path=path)
    return Deployment(anvil_node.url, path, data["bsc"])


@pytest.fixture(scope="module")
def chain_market(request, anvil_node, deployment) -> MarketSummary:
    """The module's market, built once; MARKET_ORDERS in the test module sets its size."""
    n_orders = getattr(request.module, "MARKET_ORDERS", 30)
    summary = Market(anvil_node, deployment).run(n_orders)
    return summary


@pytest.fixture
def chain_settings(settings, deployment):
    """Point chain.config at the module's deployment (primary and fallback both the anvil)."""
    from chain import rpc

    settings.CHAIN_DEPLOYMENT_FILE = deployment.path
    rpc.reset_clients()
    yield settings
    rpc.reset_clients()


@pytest.fixture
def small_batches(chain_settings, monkeypatch):
    """chain_settings with requests and transactions of at most 5 blocks: many of them, even over a small market
    (a transaction ends at its fifth block, not a second later)."""
    from chain import pipeline
    from chain.config import get_chain_config

    monkeypatch.setattr(pipeline, "COMMIT_SECONDS", 0)
    monkeypatch.setattr(pipeline, "LONGEST_SECONDS", 0)  # inside a burst too
    chain_settings.CHAINS = {**chain_settings.CHAINS, "bsc": {**chain_settings.CHAINS["bsc"], "batch_blocks": 5}}
    assert get_chain_config("bsc").batch_blocks == 5
    return chain_settings


@pytest.fixture
def restore_chain(anvil_node):
    """Tests that add blocks or reorg the chain leave it as they found it."""
    snapshot_id = anvil_node.snapshot()
    yield anvil_node
    anvil_node.revert(snapshot_id)


class TcpProxy:
    """A loopback TCP forwarder standing in for an RPC provider that can be killed and revived."""

    def __init__(self, upstream: str):
        from urllib.parse import urlsplit

        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        from backoffice.devservices import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = None
        self._sockets: set = set()
        self._lock = threading.Lock()

    def start(self) -> "TcpProxy":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def kill(self) -> None:
        """Stop listening and cut every open connection, as a provider outage does."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            # Registered under the lock only while still listening: a connection accepted as kill() ran is cut
            # here, not left open past the outage (a keep-alive session would go on using it).
            with self._lock:
                alive = self._listener is listener
                if alive:
                    self._sockets.update((client, upstream))
            if not alive:
                for sock in (client, upstream):
                    sock.close()
                return
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def tcp_proxy(anvil_node):
    proxy = TcpProxy(anvil_node.url).start()
    yield proxy
    proxy.kill()


def dead_url() -> str:
    """A loopback port nobody listens on."""
    from backoffice.devservices import free_port

    return f"http://127.0.0.1:{free_port()}"


class FaultyRpc:
    """A JSON-RPC forwarder to the real node that injects faults: `fault(body)` may answer a request itself
    ((status, body[, headers]) or None to forward it); `delay` is added to every request. With `stretch` (a
    chain.stretched.StretchedChain), it serves that longer chain instead of the node's own. It records each
    request's time and body, and the most requests it held at once."""

    def __init__(self, upstream: str, fault=None, delay: float = 0.0, stretch=None):
        from tests.local_http import LocalHttpServer

        self.upstream, self.fault, self.delay, self.stretch = upstream, fault, delay, stretch
        self.requests: list[tuple[float, object]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        self._server = LocalHttpServer(self._answer)
        self.url = self._server.url

    def get_logs_calls(self) -> list[dict]:
        """Every eth_getLogs call it received, alone or in a batch (a run's first range rides in one)."""
        return [call for _, body in self.requests for call in (body if isinstance(body, list) else [body])
                if isinstance(call, dict) and call.get("method") == "eth_getLogs"]

    def get_logs_spans(self) -> list[int]:
        return [int(c["params"][0]["toBlock"], 16) - int(c["params"][0]["fromBlock"], 16) + 1
                for c in self.get_logs_calls()]

    def _answer(self, path, headers, raw: bytes):
        import time

        body = json.loads(raw)
        with self._lock:
            self.requests.append((time.monotonic(), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            answer = self.fault(body) if self.fault else None
            if answer is not None:
                return answer
            if self.stretch is not None:
                return 200, self.stretch.answer(body)
            return 200, requests.post(self.upstream, data=raw, headers={"Content-Type": "application/json"},
                                      timeout=60).content
        finally:
            with self._lock:
                self.in_flight -= 1

    def close(self) -> None:
        self._server.close()


@pytest.fixture
def faulty_rpc(anvil_node):
    """FaultyRpc in front of the module's node; closed after the test."""
    proxies = []

    def make(fault=None, delay: float = 0.0, stretch=None) -> FaultyRpc:
        proxies.append(FaultyRpc(anvil_node.url, fault, delay, stretch))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
