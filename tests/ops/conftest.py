"""Fixtures for the contract-action tests: a real anvil per module with the contracts deployed.

The tests read the chain back with web3 directly (contract getters, logs, nonces), never through
`chain.transactions` or `ops.actions`, so the code under test is not its own oracle. Each test runs
between an `evm_snapshot` and an `evm_revert`, so chain state (and the owner's nonce) never leaks
from one test to the next; the database side is rolled back or flushed by pytest-django.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from web3 import Web3

from backoffice.devservices import ANVIL_OWNER_KEY, KEEPER_INDEX, anvil_key, running_anvil
from chain.deploy import get_contract

DAY = 86_400
STAKE = 10**17
TOKEN_SUPPLY = 10**30
TREASURY_UPDATED = "TreasuryUpdated(address,address)"
STATUS = {0: "none", 1: "funded", 2: "delivered", 3: "completed", 4: "disputed", 5: "resolved_buyer",
          6: "resolved_seller", 7: "cancelled", 8: "expired"}


@dataclass
class LocalChain:
    """The tests' own view of one anvil node and its deployed contracts."""

    url: str
    path: Path
    data: dict
    w3: Web3

    def __post_init__(self):
        self.escrow = get_contract(self.w3, "P2PEscrow", self.data["escrow"])
        self.pool = get_contract(self.w3, "ArbitratorPool", self.data["arbitrator_pool"])
        self.tokens = {sym: get_contract(self.w3, "TestToken", addr) for sym, addr in self.data["tokens"].items()}
        self.accounts = [Web3.to_checksum_address(a) for a in self.w3.eth.accounts]
        self.owner, self.treasury = self.accounts[0], self.accounts[1]
        self.keeper = self.accounts[KEEPER_INDEX]  # signs the public timeout calls, never an owner call
        self.buyer, self.seller = self.accounts[10], self.accounts[11]

    # ------------------------------------------------------------------ node control
    def rpc(self, method: str, params: list | None = None):
        response = self.w3.provider.make_request(method, params or [])
        if "error" in response:
            raise AssertionError(f"{method}: {response['error']}")
        return response["result"]

    def snapshot(self) -> str:
        return self.rpc("evm_snapshot")

    def revert(self, snapshot_id: str) -> None:
        assert self.rpc("evm_revert", [snapshot_id]) is True

    @contextlib.contextmanager
    def reverted(self):
        """The chain as it was before the block, whatever it did. Pending transactions are dropped first and last: one a
        test left unmined (automine off) would outlive the revert and be mined in a later test, with the nonce that
        test's own action expects (seen: a fee change of the stuck-transaction test mined in the failed-action test)."""
        self.rpc("anvil_dropAllTransactions", [])
        snapshot_id = self.snapshot()
        try:
            yield self
        finally:
            self.rpc("anvil_dropAllTransactions", [])
            self.automine(True)
            self.revert(snapshot_id)

    def mine(self, blocks: int = 1) -> None:
        self.rpc("anvil_mine", [hex(blocks)])

    def automine(self, on: bool) -> None:
        self.rpc("evm_setAutomine", [on])

    def increase_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [seconds])
        self.rpc("evm_mine")

    def now(self) -> int:
        return self.w3.eth.get_block("latest")["timestamp"]

    def owner_nonce(self, block: str = "latest") -> int:
        return self.nonce_of(self.owner, block)

    def nonce_of(self, address: str, block: str = "latest") -> int:
        return self.w3.eth.get_transaction_count(address, block)

    def head(self) -> int:
        return self.w3.eth.block_number

    # ------------------------------------------------------------------ reads
    def order(self, order_id: int) -> dict:
        fields = ("buyer", "seller", "token", "amount", "platform_fee", "arbitrator", "created_at",
                  "seller_deadline", "buyer_deadline", "dispute_deadline", "status")
        values = dict(zip(fields, self.escrow.functions.orders(order_id).call(), strict=True))
        values["status"] = STATUS[values["status"]]
        return values

    def balance(self, symbol: str, who: str) -> int:
        return self.tokens[symbol].functions.balanceOf(Web3.to_checksum_address(who)).call()

    def logs(self, event: str, from_block: int) -> list:
        return getattr(self.escrow.events, event)().get_logs(from_block=from_block, to_block="latest")

    def owner_txs(self, from_block: int) -> list:
        """Every mined transaction sent by the owner from `from_block` on."""
        return self.txs_from(self.owner, from_block)

    def txs_from(self, sender: str, from_block: int) -> list:
        """Every mined transaction sent by `sender` from `from_block` on."""
        out = []
        for number in range(from_block, self.head() + 1):
            for tx in self.w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"] == sender:
                    out.append(tx)
        return out

    # ------------------------------------------------------------------ writes (plain anvil accounts)
    def send(self, fn, sender: str, value: int = 0):
        tx_hash = fn.transact({"from": sender, "value": value})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
        assert receipt["status"] == 1, f"{fn.fn_name} reverted"
        return receipt

    def create_order(self, *, amount: int = 1_000 * 10**18, symbol: str = "USDT", buyer: str | None = None,
                     seller: str | None = None) -> int:
        order_id = self.escrow.functions.nextOrderId().call()
        self.send(self.escrow.functions.createOrder(seller or self.seller, self.tokens[symbol].address, amount),
                  buyer or self.buyer)
        return order_id

    def deliver(self, order_id: int) -> None:
        self.send(self.escrow.functions.markDelivered(order_id), self.order(order_id)["seller"])

    def dispute(self, order_id: int) -> None:
        self.send(self.escrow.functions.openDispute(order_id, "bafyevidence"), self.order(order_id)["buyer"])


@pytest.fixture(scope="module")
def local_chain(tmp_path_factory) -> LocalChain:
    """A fresh anvil (automine) with the contracts, funded traders and three staked arbitrators."""
    from chain.local import deploy_local

    with running_anvil("bsc", block_time="") as (_proc, url):
        path = tmp_path_factory.mktemp("ops-deployment") / "deployment.json"
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}}, path=path)["bsc"]
        node = LocalChain(url, path, data, Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30})))
        for trader in node.accounts[10:16]:
            for token in node.tokens.values():
                node.send(token.functions.mint(trader, TOKEN_SUPPLY), trader)
                node.send(token.functions.approve(node.escrow.address, 2**256 - 1), trader)
        for arbitrator in node.accounts[2:5]:
            node.send(node.pool.functions.register(), arbitrator, value=STAKE)
        yield node


@pytest.fixture
def chain(local_chain, settings):
    """Point the back office at the module's node in eoa custody (owner and keeper keys); undo the test's chain
    changes after."""
    from chain import rpc, transactions

    settings.CHAIN_DEPLOYMENT_FILE = local_chain.path
    # These tests exercise eoa custody (the owner key on the server); tests/ops/test_safe*.py the Safe.
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "owner_mode": "eoa"}}
    settings.OWNER_KEY = ANVIL_OWNER_KEY
    settings.OWNER_KEYSTORE = ""
    settings.KEEPER_KEY = anvil_key(KEEPER_INDEX)
    settings.KEEPER_KEYSTORE = ""
    rpc.reset_clients()
    transactions.reset_signer()
    with local_chain.reverted():
        yield local_chain
    rpc.reset_clients()
    transactions.reset_signer()


@pytest.fixture
def alice(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-password-1", is_staff=True,
                                                  is_superuser=True)


@pytest.fixture
def bob(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-password-1", is_staff=True, is_superuser=True)


@pytest.fixture
def trades_flag(db):
    """The kill-switch flag (a data migration creates it; a transactional test's flush removes it)."""
    from ops.models import PlatformFlag

    flag, _ = PlatformFlag.objects.get_or_create(key="TRADES_ENABLED", defaults={"value": True})
    return flag
