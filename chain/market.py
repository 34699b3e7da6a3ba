"""A market driver for local nodes: realistic escrow activity from anvil's unlocked wallets (make run, tests, bench).

Talks plain JSON-RPC (requests) with hand-encoded calldata: the bulk path sends tens of thousands of
transactions and web3's per-call encoding and gas estimation would dominate. Contract reverts are
expected (a dispute raced by a confirmation, a deadline just passed): the driver re-reads the
order from `orders(uint256)` and carries on, it never stops on one.

`step` (make run's simulate_market) never moves the node's clock: the local deployment sets windows of minutes
(`devservices.LOCAL_TIMEOUTS`), so timeouts fire in real time and every date the back office shows is real.
Only `bulk_orders` (chain.market_bulk), for benchmarks and tests on throwaway nodes, pushes block time ahead.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import requests
from eth_abi import encode as abi_encode
from eth_utils import event_abi_to_log_topic, function_abi_to_4byte_selector

from .deploy import load_artifact
from .models import CONTRACT_STATUS, OPEN_STATUSES

logger = logging.getLogger(__name__)

MAX_UINT = 2**256 - 1
ARBITRATOR_COUNT = 6
ARBITRATOR_STAKE = 10**18  # 1 native coin, above the pool's 0.1 minimum
RECEIPT_TIMEOUT = 30.0
# Explicit gas: no per-transaction estimation. Generous, the unused part is never charged on anvil.
GAS = {"createOrder": 250_000, "markDelivered": 80_000, "confirmReceipt": 120_000, "cancelOrder": 100_000,
       "openDispute": 250_000, "submitEvidence": 80_000, "resolveDispute": 250_000,
       "ownerResolveDispute": 250_000, "autoExpireOrder": 100_000, "autoReleaseToSeller": 130_000,
       "mint": 120_000, "approve": 80_000, "register": 250_000, "setReputation": 80_000}
STATUS = {0: "none", **{code: status.value for code, status in CONTRACT_STATUS.items()}}
FINAL = {code for code, status in CONTRACT_STATUS.items() if status not in OPEN_STATUSES}
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


class RpcFailure(RuntimeError):
    """The node refused a request (not a contract revert: those come back as failed receipts)."""


@dataclass
class OrderView:
    """The driver's view of one order: what `orders(uint256)` returned last, or what a receipt implied."""
    id: int
    buyer: str
    seller: str
    token: str
    status: int = 1
    arbitrator: str = ""
    seller_deadline: int = 0
    buyer_deadline: int = 0
    dispute_deadline: int = 0


def _word(value: int) -> str:
    return format(value, "064x")


def _addr_word(address: str) -> str:
    return address[2:].lower().rjust(64, "0")


class MarketDriver:
    """Drives one chain's escrow from anvil's unlocked accounts 2..39 (0 deployed the contracts, 1 is the treasury).

    Owner-only calls (setReputation, ownerResolveDispute) come from the deployment's owner: account 0 in eoa
    custody, the Safe in safe custody. Public calls (timeouts, test-token mints) come from account 0 either way.
    """

    def __init__(self, w3, deployment: dict, *, seed: int = 0, url: str | None = None):
        self.w3 = w3
        self.url = url or getattr(w3.provider, "endpoint_uri", None) or deployment["rpc_url"]
        self.rng = random.Random(seed)
        self.session = requests.Session()
        self._ids = itertools.count(1)
        self.escrow = deployment["escrow"].lower()
        self.pool = deployment["arbitrator_pool"].lower()
        self.tokens = {sym: addr.lower() for sym, addr in deployment["tokens"].items()}
        accounts = [a.lower() for a in self.rpc("eth_accounts", [])]
        if len(accounts) < 2 + ARBITRATOR_COUNT + 4:
            raise RpcFailure(f"the node has {len(accounts)} unlocked accounts; start anvil with --accounts 40")
        self.owner = (deployment.get("owner") or accounts[0]).lower()
        # Timeouts are public and TestToken.mint is open to anyone: they need no owner, so no Safe.
        self.public_sender = accounts[0]
        if deployment.get("custody", {}).get("mode") == "safe":
            # Development-only shortcut: the node signs for the Safe without its owners. The demo market
            # simulates users, not staff; staff owner actions go through the back office and the Safe's threshold.
            self.rpc("anvil_impersonateAccount", [self.owner])
            self.rpc("anvil_setBalance", [self.owner, hex(10**24)])
        wallets = accounts[2:40]
        self.arbitrators = wallets[:ARBITRATOR_COUNT]
        self.traders = wallets[ARBITRATOR_COUNT:]
        self.decimals: dict[str, int] = {}
        self.orders: dict[int, OrderView] = {}  # open orders only
        self.stats: Counter = Counter()  # actions done, and final states reached
        self.steps = 0
        self._sel = {}
        self._topics = {}
        for name in ("P2PEscrow", "ArbitratorPool", "TestToken"):
            for item in load_artifact(name)["abi"]:
                if item["type"] == "function":
                    self._sel.setdefault(item["name"], "0x" + function_abi_to_4byte_selector(item).hex())
                elif item["type"] == "event":
                    self._topics.setdefault(item["name"], "0x" + event_abi_to_log_topic(item).hex())

    # ------------------------------------------------------------------ JSON-RPC plumbing
    def rpc(self, method: str, params: list[Any]) -> Any:
        body = self.session.post(self.url, json={"jsonrpc": "2.0", "id": next(self._ids), "method": method,
                                                 "params": params}, timeout=60).json()
        if "error" in body:
            raise RpcFailure(f"{method}: {body['error'].get('message')}")
        return body["result"]

    def rpc_batch(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Many calls in one HTTP request; an error item comes back as an RpcFailure instance, not raised."""
        if not calls:
            return []
        payload = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        body = self.session.post(self.url, json=payload, timeout=300).json()
        if isinstance(body, dict):
            raise RpcFailure(f"batch refused: {body.get('error')}")
        by_id = {item["id"]: item for item in body}
        return [by_id[i]["result"] if "result" in by_id[i] else RpcFailure(str(by_id[i].get("error")))
                for i in range(len(calls))]

    def calldata(self, fn: str, *args) -> str:
        """Static arguments are encoded by hand (fast path); a string argument goes through eth_abi."""
        sel = self._sel[fn]
        if any(isinstance(a, str) and not a.startswith("0x") for a in args):
            types = ["uint256" if isinstance(a, int) and not isinstance(a, bool) else "bool" if isinstance(a, bool)
                     else "address" if a.startswith("0x") else "string" for a in args]
            return sel + abi_encode(types, list(args)).hex()
        return sel + "".join(_addr_word(a) if isinstance(a, str) else _word(int(a)) for a in args)

    def tx(self, sender: str, to: str, fn: str, *args, value: int = 0, nonce: int | None = None) -> dict:
        tx = {"from": sender, "to": to, "data": self.calldata(fn, *args), "gas": hex(GAS[fn])}
        if value:
            tx["value"] = hex(value)
        if nonce is not None:
            tx["nonce"] = hex(nonce)
        return tx

    def call(self, to: str, fn: str, *args) -> str:
        return self.rpc("eth_call", [{"to": to, "data": self.calldata(fn, *args)}, "latest"])

    def chain_time(self) -> int:
        return int(self.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    def wait_receipts(self, hashes: list[str], timeout: float = RECEIPT_TIMEOUT) -> dict[str, dict | None]:
        """Receipts by hash, polling until all are mined or the timeout passes (missing ones are None)."""
        out: dict[str, dict | None] = {h: None for h in hashes}
        deadline = time.monotonic() + timeout
        pending = list(hashes)
        while pending:
            receipts = self.rpc_batch([("eth_getTransactionReceipt", [h]) for h in pending])
            for h, r in zip(pending, receipts, strict=True):
                if r is not None and not isinstance(r, RpcFailure):
                    out[h] = r
            pending = [h for h in pending if out[h] is None]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return out

    def send(self, txs: list[dict], *, wait: bool = True, timeout: float = RECEIPT_TIMEOUT) -> list[dict | None]:
        """Send transactions in one batched request; with `wait`, their receipts (None: refused or not mined)."""
        results = self.rpc_batch([("eth_sendTransaction", [t]) for t in txs])
        hashes = [r for r in results if isinstance(r, str)]
        for r in results:
            if isinstance(r, RpcFailure):
                logger.debug("transaction refused: %s", r)
        if not wait:
            return [None] * len(txs)
        receipts = self.wait_receipts(hashes, timeout)
        return [receipts[r] if isinstance(r, str) else None for r in results]

    def nonces(self, accounts: list[str]) -> dict[str, int]:
        counts = self.rpc_batch([("eth_getTransactionCount", [a, "pending"]) for a in accounts])
        return {a: int(c, 16) for a, c in zip(accounts, counts, strict=True)}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Arbitrators staked in the pool; every trader holding and having approved both tokens. Idempotent."""
        for _sym, token in self.tokens.items():
            self.decimals[token] = int(self.call(token, "decimals"), 16)
        checks = [("eth_call", [{"to": t, "data": self.calldata("allowance", w, self.escrow)}, "latest"])
                  for w in self.traders for t in self.tokens.values()]
        allowances = self.rpc_batch(checks)
        pairs = [(w, t) for w in self.traders for t in self.tokens.values()]
        txs = []
        minter = self.public_sender
        nonces = self.nonces([minter, *self.traders])
        for (wallet, token), allowance in zip(pairs, allowances, strict=True):
            if isinstance(allowance, RpcFailure) or int(allowance, 16) < MAX_UINT // 2:
                supply = 10**15 * 10 ** self.decimals[token]
                txs.append(self.tx(minter, token, "mint", wallet, supply, nonce=nonces[minter]))
                nonces[minter] += 1
                txs.append(self.tx(wallet, token, "approve", self.escrow, MAX_UINT, nonce=nonces[wallet]))
                nonces[wallet] += 1
        self.send(txs, timeout=120)
        self.maintain_pool()

    def arbitrator_states(self) -> dict[str, tuple[int, bool]]:
        """{arbitrator: (reputation, is_active)} from the pool's `arbitrators(address)`."""
        raw = self.rpc_batch([("eth_call", [{"to": self.pool, "data": self.calldata("arbitrators", a)}, "latest"])
                              for a in self.arbitrators])
        out = {}
        for a, r in zip(self.arbitrators, raw, strict=True):
            if isinstance(r, RpcFailure):
                continue
            words = [int(r[2 + 64 * i: 66 + 64 * i], 16) for i in range(6)]
            out[a] = (words[1], bool(words[4]))
        return out

    def maintain_pool(self) -> int:
        """Re-register arbitrators the owner's fallback deactivated (restoring reputation first); returns count."""
        txs = []
        for wallet, (reputation, active) in self.arbitrator_states().items():
            if active:
                continue
            if reputation < 10:
                txs.append(self.tx(self.owner, self.pool, "setReputation", wallet, 50))
            txs.append(self.tx(wallet, self.pool, "register", value=ARBITRATOR_STAKE))
        if txs:
            # One after the other: the registration needs the restored reputation.
            for t in txs:
                self.send([t], timeout=120)
            self.stats["arbitrator_registered"] += sum(1 for t in txs if t["data"].startswith(self._sel["register"]))
        return len(txs)

    # ------------------------------------------------------------------ one realistic action
    def refresh(self, order_id: int) -> OrderView | None:
        """Re-read an order from `orders(uint256)`; drops it from the open set once final."""
        raw = self.call(self.escrow, "orders", order_id)
        w = [int(raw[2 + 64 * i: 66 + 64 * i], 16) for i in range(11)]
        addr = lambda v: "0x" + format(v, "040x")  # noqa: E731
        view = OrderView(order_id, addr(w[0]), addr(w[1]), addr(w[2]), status=w[10], arbitrator=addr(w[5]),
                         seller_deadline=w[7], buyer_deadline=w[8], dispute_deadline=w[9])
        if view.status in FINAL or view.status == 0:
            self.orders.pop(order_id, None)
        else:
            self.orders[order_id] = view
        return view

    def fake_cid(self) -> str:
        return "bafybei" + "".join(self.rng.choice(_B32) for _ in range(52))

    def random_amount(self, token: str) -> int:
        whole = self.rng.choice([5, 10, 20, 25, 50, 75, 100, 150, 250, 500, 1000, 2500])
        cents = self.rng.randint(0, 99)
        return (whole * 100 + cents) * 10 ** (self.decimals[token] - 2)

    def _do(self, action: str, sender: str, to: str, fn: str, *args, order: int | None = None) -> bool:
        receipt = self.send([self.tx(sender, to, fn, *args)])[0]
        ok = bool(receipt) and int(receipt["status"], 16) == 1
        if ok:
            self.stats[action] += 1
        else:
            self.stats["reverted"] += 1
        if action == "create" and ok:
            created = self._topics["OrderCreated"]
            for log in receipt["logs"]:
                if log["address"].lower() == self.escrow and log["topics"][0] == created:
                    order = int(log["topics"][1], 16)
        if order is not None and (ok or receipt):
            before = self.orders.get(order)
            view = self.refresh(order)
            if view and view.status in FINAL and (before is None or before.status != view.status):
                self.stats[f"final_{STATUS[view.status]}"] += 1
        return ok

    def step(self) -> str:
        """One random action that the driver's view of the open orders allows. Returns its name."""
        self.steps += 1
        try:
            return self._step()
        except (requests.RequestException, RpcFailure, ValueError, KeyError) as exc:
            # The node hiccuped (or an order vanished under us): skip this step, keep the loop alive.
            logger.warning("market step failed: %s", exc)
            self.stats["step_errors"] += 1
            return "error"

    def _step(self) -> str:
        if not self.decimals:
            self.setup()
        if self.steps % 25 == 0:
            self.maintain_pool()
        now = self.chain_time()
        by = {s: [o for o in self.orders.values() if o.status == s] for s in (1, 2, 4)}
        funded_live = [o for o in by[1] if now <= o.seller_deadline]
        funded_late = [o for o in by[1] if now > o.seller_deadline]
        delivered_live = [o for o in by[2] if now <= o.buyer_deadline]
        delivered_late = [o for o in by[2] if now > o.buyer_deadline]
        disputed_live = [o for o in by[4] if o.arbitrator in self.arbitrators]
        disputed_late = [o for o in by[4] if now > o.dispute_deadline]
        pick = self.rng.choice
        options: list[tuple[float, str, Callable[[], bool]]] = [
            (6.0 if len(self.orders) < 25 else 2.0, "create", self._create)]
        if funded_live:
            options += [(3.0, "deliver", lambda: self._act("deliver", "markDelivered", pick(funded_live), "seller")),
                        (0.7, "cancel", lambda: self._act("cancel", "cancelOrder", pick(funded_live), "seller")),
                        (0.6, "dispute", lambda: self._dispute(pick(funded_live)))]
        if delivered_live:
            options += [(3.0, "confirm", lambda: self._act("confirm", "confirmReceipt", pick(delivered_live), "buyer")),
                        (0.8, "dispute", lambda: self._dispute(pick(delivered_live)))]
        if disputed_live:
            options += [(0.9, "evidence", lambda: self._evidence(pick(disputed_live))),
                        (1.0, "resolve", lambda: self._resolve(pick(disputed_live)))]
        if funded_late:
            options.append((2.0, "expire", lambda: self._act("expire", "autoExpireOrder", pick(funded_late), "anyone")))
        if delivered_late:
            options.append((2.0, "auto_release",
                            lambda: self._act("auto_release", "autoReleaseToSeller", pick(delivered_late), "anyone")))
        if disputed_late:
            options.append((2.0, "owner_resolve", lambda: self._owner_resolve(pick(disputed_late))))
        weights = [w for w, _, _ in options]
        _, name, fn = self.rng.choices(options, weights)[0]
        fn()
        return name

    def _create(self) -> bool:
        buyer, seller = self.rng.sample(self.traders, 2)
        token = self.rng.choice(list(self.tokens.values()))
        return self._do("create", buyer, self.escrow, "createOrder", seller, token, self.random_amount(token))

    def _act(self, action: str, fn: str, order: OrderView, who: str) -> bool:
        sender = {"buyer": order.buyer, "seller": order.seller, "anyone": self.public_sender}[who]
        return self._do(action, sender, self.escrow, fn, order.id, order=order.id)

    def _dispute(self, order: OrderView) -> bool:
        sender = order.buyer if self.rng.random() < 0.7 else order.seller
        return self._do("dispute", sender, self.escrow, "openDispute", order.id, self.fake_cid(), order=order.id)

    def _evidence(self, order: OrderView) -> bool:
        sender = self.rng.choice([order.buyer, order.seller])
        return self._do("evidence", sender, self.escrow, "submitEvidence", order.id, self.fake_cid(), order=order.id)

    def _resolve(self, order: OrderView) -> bool:
        favor = self.rng.random() < 0.5
        return self._do("resolve_buyer" if favor else "resolve_seller", order.arbitrator, self.escrow,
                        "resolveDispute", order.id, favor, order=order.id)

    def _owner_resolve(self, order: OrderView) -> bool:
        favor = self.rng.random() < 0.5
        return self._do("owner_resolve_buyer" if favor else "owner_resolve_seller", self.owner, self.escrow,
                        "ownerResolveDispute", order.id, favor, order=order.id)
