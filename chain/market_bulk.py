"""`BulkMarketDriver`: the market driver plus `bulk_orders`, a long history written fast on a throwaway node."""
from __future__ import annotations

from typing import Callable

from .market import MarketDriver, OrderView, RpcFailure

DAY = 86_400


def _topic_address(topic: str) -> str:
    return "0x" + topic[-40:]


class BulkMarketDriver(MarketDriver):
    """For benchmarks and tests only: `bulk_orders` turns automine off and moves the node's clock, which make
    run's driver never does."""

    def bulk_orders(self, n: int, *, lifecycle: bool = True, per_block: int = 8, round_size: int = 5000,
                    progress: Callable[[str], None] | None = None) -> int:
        """Create `n` orders fast (automine off, batched eth_sendTransaction, explicit gas and nonces).

        With `lifecycle`, each order gets a fate and the follow-up transactions (deliver, confirm, cancel,
        disputes with evidence, arbitrator and owner resolutions, expiry and auto-release after a time
        warp), so that most orders end final and every state appears. About `per_block` transactions
        go into each block. Returns the number of orders created. Leaves automine as it found it.
        """
        if not self.decimals:
            self.setup()
        automine = self.rpc("anvil_getAutomine", [])
        self.rpc("evm_setAutomine", [False])
        created = 0
        try:
            while created < n:
                size = min(round_size, n - created)
                created += self._bulk_round(size, lifecycle, per_block)
                if progress:
                    progress(f"bulk_orders: {created}/{n} orders, block {int(self.rpc('eth_blockNumber', []), 16)}")
        finally:
            self.rpc("evm_mine", [])
            self.rpc("evm_setAutomine", [bool(automine)])
        return created

    def _mine_txs(self, txs: list[dict], per_block: int) -> tuple[int, int]:
        """Send `txs` with explicit nonces and mine them about `per_block` per block. Returns the block range."""
        if not txs:
            return 0, -1
        nonces = self.nonces(sorted({t["from"] for t in txs}))
        for t in txs:
            t["nonce"] = hex(nonces[t["from"]])
            nonces[t["from"]] += 1
        first = int(self.rpc("eth_blockNumber", []), 16) + 1
        # A batch's items may run concurrently on the node, so evm_mine gets its own request, after the
        # batch that filled the pool has been answered.
        for i in range(0, len(txs), per_block):
            for r in self.rpc_batch([("eth_sendTransaction", [t]) for t in txs[i:i + per_block]]):
                if isinstance(r, RpcFailure):
                    self.stats["refused"] += 1
            self.rpc("evm_mine", [])
        # Anything still pending (it should not be) goes into more blocks.
        for _ in range(100):
            if not int(self.rpc("txpool_status", [])["pending"], 16):
                break
            self.rpc("evm_mine", [])
        return first, int(self.rpc("eth_blockNumber", []), 16)

    def _logs(self, event: str, frm: int, to: int) -> list[dict]:
        if to < frm:
            return []
        return self.rpc("eth_getLogs", [{"fromBlock": hex(frm), "toBlock": hex(to), "address": self.escrow,
                                         "topics": [self._topics[event]]}])

    def _bulk_round(self, n: int, lifecycle: bool, per_block: int) -> int:
        rng = self.rng
        tokens = list(self.tokens.values())
        creates = []
        for _ in range(n):
            buyer, seller = rng.sample(self.traders, 2)
            token = rng.choice(tokens)
            creates.append(self.tx(buyer, self.escrow, "createOrder", seller, token, self.random_amount(token)))
        frm, to = self._mine_txs(creates, per_block)
        orders = {}
        for log in self._logs("OrderCreated", frm, to):
            oid = int(log["topics"][1], 16)
            orders[oid] = OrderView(oid, _topic_address(log["topics"][2]), _topic_address(log["topics"][3]),
                                    "0x" + log["data"][26:66])
        self.stats["create"] += len(orders)
        if not lifecycle:
            return len(orders)
        fates = ["confirm"] * 30 + ["auto_release"] * 9 + ["cancel"] * 9 + ["expire"] * 8 + \
                ["dispute_funded"] * 12 + ["dispute_delivered"] * 14 + ["stay_funded"] * 3 + \
                ["stay_delivered"] * 4 + ["stay_disputed"] * 2
        fate = {oid: rng.choice(fates) for oid in orders}
        disputers = {oid: rng.choice(["buyer", "buyer", "seller"]) for oid in orders}
        # Phase B: the seller acts or a party disputes the funded order.
        b = []
        for oid, f in fate.items():
            o = orders[oid]
            if f in ("confirm", "auto_release", "dispute_delivered", "stay_delivered"):
                b.append(self.tx(o.seller, self.escrow, "markDelivered", oid))
            elif f == "cancel":
                b.append(self.tx(o.seller, self.escrow, "cancelOrder", oid))
            elif f in ("dispute_funded", "stay_disputed"):
                who = o.buyer if disputers[oid] == "buyer" else o.seller
                b.append(self.tx(who, self.escrow, "openDispute", oid, self.fake_cid()))
        rng.shuffle(b)
        frm_b, to_b = self._mine_txs(b, per_block)
        # Phase C: the buyer confirms or disputes; evidence for the disputes opened in B.
        c = []
        for oid, f in fate.items():
            o = orders[oid]
            if f == "confirm":
                c.append(self.tx(o.buyer, self.escrow, "confirmReceipt", oid))
            elif f == "dispute_delivered":
                who = o.buyer if disputers[oid] == "buyer" else o.seller
                c.append(self.tx(who, self.escrow, "openDispute", oid, self.fake_cid()))
            elif f in ("dispute_funded", "stay_disputed") and rng.random() < 0.6:
                c.append(self.tx(rng.choice([o.buyer, o.seller]), self.escrow, "submitEvidence", oid, self.fake_cid()))
        rng.shuffle(c)
        _, to_c = self._mine_txs(c, per_block)
        for log in self._logs("OrderDisputed", frm_b, to_c):
            oid = int(log["topics"][1], 16)
            if oid in orders:
                orders[oid].arbitrator = _topic_address(log["topics"][3])
        # Phase D: evidence for the later disputes, then arbitrators decide most disputes.
        d = [self.tx(rng.choice([orders[o].buyer, orders[o].seller]), self.escrow, "submitEvidence", o,
                     self.fake_cid()) for o, f in fate.items() if f == "dispute_delivered" and rng.random() < 0.5]
        self._mine_txs(d, per_block)
        owner_share = {oid for oid, f in fate.items() if f.startswith("dispute") and rng.random() < 0.05}
        e = []
        for oid, f in fate.items():
            o = orders[oid]
            if f.startswith("dispute") and oid not in owner_share and o.arbitrator in self.arbitrators:
                e.append(self.tx(o.arbitrator, self.escrow, "resolveDispute", oid, rng.random() < 0.5))
        rng.shuffle(e)
        self._mine_txs(e, per_block)
        # Time passes: seller, buyer and dispute deadlines all run out.
        self.rpc("evm_increaseTime", [4 * DAY + 60])
        # Phase F: a keeper expires and auto-releases (public calls), the owner resolves what arbitrators left,
        # sparing reputation so the owner's penalties never empty the pool.
        budget = {a: max(0, (rep - 25) // 15) for a, (rep, active) in self.arbitrator_states().items() if active}
        f_txs = []
        for oid, f in fate.items():
            o = orders[oid]
            if f == "expire":
                f_txs.append(self.tx(self.public_sender, self.escrow, "autoExpireOrder", oid))
            elif f == "auto_release":
                f_txs.append(self.tx(self.public_sender, self.escrow, "autoReleaseToSeller", oid))
            elif oid in owner_share and budget.get(o.arbitrator, 0) > 0:
                budget[o.arbitrator] -= 1
                f_txs.append(self.tx(self.owner, self.escrow, "ownerResolveDispute", oid, rng.random() < 0.5))
        self._mine_txs(f_txs, per_block)
        # What the owner could not take, the late arbitrators still decide.
        done = {int(t["data"][10:74], 16) for t in f_txs}
        g = [self.tx(orders[o].arbitrator, self.escrow, "resolveDispute", o, rng.random() < 0.5)
             for o in owner_share if o not in done and orders[o].arbitrator in self.arbitrators]
        self._mine_txs(g, per_block)
        self.maintain_pool()
        return len(orders)
