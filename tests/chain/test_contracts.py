"""End-to-end tests of the Solidity contracts against a real anvil node.

Plain pytest (no Django): a module-scoped fixture starts ``node_modules/.bin/anvil`` on a
free loopback port, deploys everything with ``chain/deploy.py`` and registers arbitrators.
Each test runs inside an ``evm_snapshot``/``evm_revert`` pair so tests do not leak state.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from eth_utils import keccak
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError
from web3.logs import DISCARD

from backoffice.devservices import stop_process

pytestmark = pytest.mark.anvil

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL = REPO_ROOT / "node_modules" / ".bin" / "anvil"
DEPLOY_PY = REPO_ROOT / "chain" / "deploy.py"

# Status enum of P2PEscrow (the back office relies on these values).
NONE, FUNDED, DELIVERED, COMPLETED, DISPUTED, RESOLVED_BUYER, RESOLVED_SELLER, CANCELLED, EXPIRED = range(9)

ONE_DAY = 24 * 60 * 60
UNIT = 10**18  # USDT test token has 18 decimals
AMOUNT = 1_000 * UNIT
FEE = AMOUNT * 100 // 10_000  # default platformFeeBps = 100
ARBITRATOR_FEE = FEE * 5_000 // 10_000  # default arbitratorFeeBps = 5000
STAKE = 10**17


def _load_deploy_module():
    # Loaded by path so the test does not depend on the Django ``chain`` package being importable.
    spec = importlib.util.spec_from_file_location("escrow_chain_deploy", DEPLOY_PY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


deploy = _load_deploy_module()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def anvil_w3():
    if not ANVIL.exists() or shutil.which(str(ANVIL)) is None:
        pytest.skip("anvil not installed; run `npm install`")
    port = _free_port()
    proc = subprocess.Popen(
        [str(ANVIL), "--host", "127.0.0.1", "--port", str(port), "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        w3 = Web3(Web3.HTTPProvider(f"http://127.0.0.1:{port}", request_kwargs={"timeout": 30}))
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"anvil exited early: {proc.stderr.read().decode(errors='replace')}")
            try:
                if w3.is_connected() and w3.eth.block_number >= 0:
                    break
            except Exception:  # noqa: BLE001 - node still starting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("anvil did not become ready within 30s")
            time.sleep(0.1)
        yield w3
    finally:
        stop_process(proc)


class Env:
    """Deployed contracts plus named accounts."""

    def __init__(self, w3, deployment):
        accounts = w3.eth.accounts
        self.w3 = w3
        self.deployment = deployment
        self.owner, self.treasury, self.buyer, self.seller = accounts[0:4]
        self.arbitrators = list(accounts[4:7])
        self.outsider = accounts[7]
        self.escrow = deploy.get_contract(w3, "P2PEscrow", deployment["escrow"])
        self.pool = deploy.get_contract(w3, "ArbitratorPool", deployment["arbitrator_pool"])
        self.usdt = deploy.get_contract(w3, "TestToken", deployment["tokens"]["USDT"])
        self.usdc = deploy.get_contract(w3, "TestToken", deployment["tokens"]["USDC"])

    # -- helpers --------------------------------------------------------------------------

    def tx(self, fn, sender, value=0):
        params = {"from": sender}
        if value:
            params["value"] = value
        receipt = self.w3.eth.wait_for_transaction_receipt(fn.transact(params))
        assert receipt["status"] == 1
        return receipt

    def balance(self, who, token=None):
        return (token or self.usdt).functions.balanceOf(who).call()

    def order(self, order_id):
        return self.escrow.functions.orders(order_id).call()

    def status(self, order_id):
        return self.order(order_id)[10]

    def increase_time(self, seconds):
        self.w3.provider.make_request("evm_increaseTime", [seconds])
        self.w3.provider.make_request("evm_mine", [])

    def now(self):
        return self.w3.eth.get_block("latest")["timestamp"]

    def create_order(self, amount=AMOUNT, buyer=None, seller=None):
        buyer = buyer or self.buyer
        seller = seller or self.seller
        self.tx(self.usdt.functions.mint(buyer, amount), buyer)
        self.tx(self.usdt.functions.approve(self.escrow.address, amount), buyer)
        order_id = self.escrow.functions.nextOrderId().call()
        receipt = self.tx(self.escrow.functions.createOrder(seller, self.usdt.address, amount), buyer)
        return order_id, receipt

    def disputed_order(self, delivered=False):
        order_id, _ = self.create_order()
        if delivered:
            self.tx(self.escrow.functions.markDelivered(order_id), self.seller)
        receipt = self.tx(self.escrow.functions.openDispute(order_id, "ipfs://evidence-1"), self.buyer)
        arbitrator = self.order(order_id)[5]
        assert arbitrator in self.arbitrators
        return order_id, arbitrator, receipt

    def events(self, contract, event_name, receipt):
        # DISCARD: a receipt also carries logs of the other contracts (token transfers, pool events).
        return getattr(contract.events, event_name)().process_receipt(receipt, errors=DISCARD)


def selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def expect_revert(fn, sender, error_signature: str, value: int = 0):
    """Assert that sending ``fn`` from ``sender`` reverts with the given custom error."""
    with pytest.raises((ContractCustomError, ContractLogicError)) as excinfo:
        fn.transact({"from": sender, "value": value})
    data = excinfo.value.data
    if isinstance(data, bytes):
        data = "0x" + data.hex()
    assert isinstance(data, str) and data.startswith(selector(error_signature)), (error_signature, data)


@pytest.fixture(scope="module")
def deployed(anvil_w3):
    w3 = anvil_w3
    accounts = w3.eth.accounts
    deployment = deploy.deploy_all(w3, accounts[0], accounts[1], min_stake=STAKE)
    env = Env(w3, deployment)
    for arbitrator in env.arbitrators:
        env.tx(env.pool.functions.register(), arbitrator, value=STAKE)
    return env


@pytest.fixture
def env(deployed):
    w3 = deployed.w3
    snapshot = w3.provider.make_request("evm_snapshot", [])["result"]
    yield deployed
    assert w3.provider.make_request("evm_revert", [snapshot])["result"] is True


# ---------------------------------------------------------------------------- artifacts


def test_artifacts_have_stable_shape():
    for name in ("P2PEscrow", "ArbitratorPool", "TestToken"):
        path = REPO_ROOT / "chain" / "artifacts" / f"{name}.json"
        raw = path.read_text(encoding="utf-8")
        assert raw.endswith("}\n")
        artifact = json.loads(raw)
        assert list(artifact) == ["contractName", "abi", "bytecode", "deployedBytecode", "solcVersion"]
        assert artifact["contractName"] == name
        assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 2
        assert artifact["deployedBytecode"].startswith("0x") and len(artifact["deployedBytecode"]) > 2
        assert artifact["solcVersion"].startswith("0.8.28+")


def test_order_completed_topic_matches_signature():
    abi = deploy.load_artifact("P2PEscrow")["abi"]
    signatures = {
        f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
        for item in abi
        if item["type"] == "event"
    }
    assert "OrderCompleted(uint256,uint256,uint256)" in signatures
    assert Web3.keccak(text="OrderCompleted(uint256,uint256,uint256)") == keccak(
        text="OrderCompleted(uint256,uint256,uint256)"
    )


def test_getters_have_expected_signatures():
    pool_fns = {
        f"{i['name']}({','.join(x['type'] for x in i['inputs'])})"
        for i in deploy.load_artifact("ArbitratorPool")["abi"]
        if i["type"] == "function"
    }
    escrow_fns = {
        f"{i['name']}({','.join(x['type'] for x in i['inputs'])})"
        for i in deploy.load_artifact("P2PEscrow")["abi"]
        if i["type"] == "function"
    }
    assert {"arbitrators(address)", "activeArbitrators(uint256)", "activeArbitratorCount()"} <= pool_fns
    assert {"orders(uint256)", "arbitratorPool()", "nextOrderId()", "supportedTokens(address)"} <= escrow_fns


# ----------------------------------------------------------------------------- deploy


def test_deploy_all_wires_contracts(env):
    d = env.deployment
    assert set(d) == {"escrow", "arbitrator_pool", "tokens", "deploy_block"}
    assert set(d["tokens"]) == {"USDT", "USDC"}
    for address in (d["escrow"], d["arbitrator_pool"], *d["tokens"].values()):
        assert Web3.is_checksum_address(address)
    assert isinstance(d["deploy_block"], int) and d["deploy_block"] >= 0
    assert env.escrow.functions.owner().call() == env.owner
    assert env.escrow.functions.treasury().call() == env.treasury
    assert env.escrow.functions.arbitratorPool().call() == d["arbitrator_pool"]
    assert env.pool.functions.escrow().call() == d["escrow"]
    assert env.pool.functions.owner().call() == env.owner
    assert env.pool.functions.minStake().call() == STAKE
    assert env.escrow.functions.supportedTokens(env.usdt.address).call() is True
    assert env.escrow.functions.supportedTokens(env.usdc.address).call() is True
    assert env.usdt.functions.decimals().call() == 18
    assert env.usdc.functions.decimals().call() == 6
    assert env.usdt.functions.symbol().call() == "USDT"
    assert env.usdc.functions.name().call() == "USD Coin"
    assert env.escrow.functions.nextOrderId().call() == 1
    assert env.escrow.functions.platformFeeBps().call() == 100
    assert env.escrow.functions.arbitratorFeeBps().call() == 5000
    assert env.escrow.functions.sellerTimeout().call() == ONE_DAY
    assert env.escrow.functions.buyerTimeout().call() == 3 * ONE_DAY
    assert env.escrow.functions.disputeTimeout().call() == 3 * ONE_DAY
    assert env.pool.functions.activeArbitratorCount().call() == 3


# ------------------------------------------------------------------------------ orders


def test_order_happy_path_pays_seller_and_treasury(env):
    order_id, receipt = env.create_order()
    assert order_id == 1
    created = env.events(env.escrow, "OrderCreated", receipt)[0]["args"]
    assert (created.orderId, created.buyer, created.seller, created.amount, created.platformFee) == (
        order_id,
        env.buyer,
        env.seller,
        AMOUNT,
        FEE,
    )
    assert env.balance(env.escrow.address) == AMOUNT
    assert env.status(order_id) == FUNDED

    env.tx(env.escrow.functions.markDelivered(order_id), env.seller)
    assert env.status(order_id) == DELIVERED
    receipt = env.tx(env.escrow.functions.confirmReceipt(order_id), env.buyer)

    assert env.status(order_id) == COMPLETED
    assert env.balance(env.seller) == AMOUNT - FEE
    assert env.balance(env.treasury) == FEE
    assert env.balance(env.buyer) == 0
    assert env.balance(env.escrow.address) == 0

    completed = env.events(env.escrow, "OrderCompleted", receipt)[0]["args"]
    assert (completed.orderId, completed.sellerAmount, completed.platformFee) == (order_id, AMOUNT - FEE, FEE)
    topic = Web3.keccak(text="OrderCompleted(uint256,uint256,uint256)")
    escrow_logs = [log for log in receipt["logs"] if log["address"] == env.escrow.address]
    assert [log["topics"][0] for log in escrow_logs] == [topic]


def test_order_getter_returns_expected_tuple(env):
    order_id, receipt = env.create_order()
    created_at = env.w3.eth.get_block(receipt["blockNumber"])["timestamp"]
    assert env.order(order_id) == [
        env.buyer,
        env.seller,
        env.usdt.address,
        AMOUNT,
        FEE,
        "0x0000000000000000000000000000000000000000",
        created_at,
        created_at + ONE_DAY,
        0,
        0,
        FUNDED,
    ]
    assert env.order(999)[10] == NONE


def test_order_create_rejects_bad_input(env):
    env.tx(env.usdt.functions.mint(env.buyer, AMOUNT), env.buyer)
    env.tx(env.usdt.functions.approve(env.escrow.address, AMOUNT), env.buyer)
    f = env.escrow.functions
    expect_revert(f.createOrder(env.seller, env.outsider, AMOUNT), env.buyer, "TokenNotSupported(address)")
    expect_revert(f.createOrder(env.seller, env.usdt.address, 0), env.buyer, "InvalidAmount()")
    expect_revert(f.createOrder(env.buyer, env.usdt.address, AMOUNT), env.buyer, "InvalidSeller()")


def test_order_roles_are_enforced(env):
    order_id, _ = env.create_order()
    f = env.escrow.functions
    expect_revert(f.markDelivered(order_id), env.buyer, "NotSeller()")
    expect_revert(f.confirmReceipt(order_id), env.seller, "NotBuyer()")
    expect_revert(f.confirmReceipt(order_id), env.buyer, "InvalidStatus(uint8)")
    expect_revert(f.cancelOrder(order_id), env.buyer, "NotSeller()")
    expect_revert(f.openDispute(order_id, "x"), env.outsider, "NotParty()")
    expect_revert(f.setTreasury(env.outsider), env.outsider, "OwnableUnauthorizedAccount(address)")


def test_order_cancel_refunds_buyer(env):
    order_id, _ = env.create_order()
    receipt = env.tx(env.escrow.functions.cancelOrder(order_id), env.seller)
    assert env.status(order_id) == CANCELLED
    assert env.balance(env.buyer) == AMOUNT
    assert env.balance(env.escrow.address) == 0
    cancelled = env.events(env.escrow, "OrderCancelled", receipt)[0]["args"]
    assert (cancelled.orderId, cancelled.cancelledBy) == (order_id, env.seller)
    expect_revert(env.escrow.functions.markDelivered(order_id), env.seller, "InvalidStatus(uint8)")


def test_order_auto_expire_refunds_buyer_after_seller_timeout(env):
    order_id, _ = env.create_order()
    seller_deadline = env.order(order_id)[7]
    expect_revert(env.escrow.functions.autoExpireOrder(order_id), env.owner, "DeadlineNotReached(uint64)")

    env.increase_time(ONE_DAY + 1)
    expect_revert(env.escrow.functions.markDelivered(order_id), env.seller, "DeadlinePassed(uint64)")
    receipt = env.tx(env.escrow.functions.autoExpireOrder(order_id), env.outsider)
    assert env.status(order_id) == EXPIRED
    assert env.balance(env.buyer) == AMOUNT
    expired = env.events(env.escrow, "OrderExpired", receipt)[0]["args"]
    assert (expired.orderId, expired.refundAmount) == (order_id, AMOUNT)
    assert env.now() > seller_deadline
    expect_revert(env.escrow.functions.autoExpireOrder(order_id), env.owner, "InvalidStatus(uint8)")


def test_order_auto_release_pays_seller_after_buyer_timeout(env):
    order_id, _ = env.create_order()
    env.tx(env.escrow.functions.markDelivered(order_id), env.seller)
    expect_revert(env.escrow.functions.autoReleaseToSeller(order_id), env.owner, "DeadlineNotReached(uint64)")

    env.increase_time(3 * ONE_DAY + 1)
    receipt = env.tx(env.escrow.functions.autoReleaseToSeller(order_id), env.owner)
    assert env.status(order_id) == COMPLETED
    assert env.balance(env.seller) == AMOUNT - FEE
    assert env.balance(env.treasury) == FEE
    assert len(env.events(env.escrow, "OrderAutoReleased", receipt)) == 1
    completed = env.events(env.escrow, "OrderCompleted", receipt)[0]["args"]
    assert (completed.sellerAmount, completed.platformFee) == (AMOUNT - FEE, FEE)


def test_order_fee_is_fixed_at_creation(env):
    order_id, _ = env.create_order()
    env.tx(env.escrow.functions.setPlatformFeeBps(500), env.owner)
    env.tx(env.escrow.functions.markDelivered(order_id), env.seller)
    env.tx(env.escrow.functions.confirmReceipt(order_id), env.buyer)
    assert env.balance(env.treasury) == FEE
    expect_revert(env.escrow.functions.setPlatformFeeBps(1001), env.owner, "FeeTooHigh(uint16,uint16)")


# ---------------------------------------------------------------------------- disputes


def test_dispute_resolved_by_arbitrator_for_buyer(env):
    order_id, arbitrator, receipt = env.disputed_order()
    disputed = env.events(env.escrow, "OrderDisputed", receipt)[0]["args"]
    assert (disputed.orderId, disputed.openedBy, disputed.arbitrator, disputed.evidenceCid) == (
        order_id,
        env.buyer,
        arbitrator,
        "ipfs://evidence-1",
    )
    assert env.status(order_id) == DISPUTED
    assert env.pool.functions.openCases(arbitrator).call() == 1
    other = next(a for a in env.arbitrators if a != arbitrator)
    expect_revert(env.escrow.functions.resolveDispute(order_id, True), other, "NotArbitrator()")

    env.tx(env.escrow.functions.submitEvidence(order_id, "ipfs://evidence-2"), env.seller)
    receipt = env.tx(env.escrow.functions.resolveDispute(order_id, True), arbitrator)

    assert env.status(order_id) == RESOLVED_BUYER
    assert env.balance(env.buyer) == AMOUNT - ARBITRATOR_FEE
    assert env.balance(arbitrator) == ARBITRATOR_FEE
    assert env.balance(env.seller) == 0
    assert env.balance(env.treasury) == 0
    assert env.balance(env.escrow.address) == 0
    resolved = env.events(env.escrow, "DisputeResolved", receipt)[0]["args"]
    assert (resolved.resolver, resolved.favorBuyer, resolved.byOwner) == (arbitrator, True, False)
    assert (resolved.buyerAmount, resolved.sellerAmount, resolved.feeAmount) == (
        AMOUNT - ARBITRATOR_FEE,
        0,
        ARBITRATOR_FEE,
    )
    stake, reputation, total_resolved, total_earned, is_active, _ = env.pool.functions.arbitrators(arbitrator).call()
    assert (stake, reputation, total_resolved, total_earned, is_active) == (STAKE, 52, 1, ARBITRATOR_FEE, True)
    assert env.pool.functions.openCases(arbitrator).call() == 0


def test_dispute_resolved_by_arbitrator_for_seller(env):
    order_id, arbitrator, _ = env.disputed_order(delivered=True)
    receipt = env.tx(env.escrow.functions.resolveDispute(order_id, False), arbitrator)

    assert env.status(order_id) == RESOLVED_SELLER
    assert env.balance(env.seller) == AMOUNT - FEE
    assert env.balance(env.treasury) == FEE - ARBITRATOR_FEE
    assert env.balance(arbitrator) == ARBITRATOR_FEE
    assert env.balance(env.buyer) == 0
    assert env.balance(env.escrow.address) == 0
    resolved = env.events(env.escrow, "DisputeResolved", receipt)[0]["args"]
    assert (resolved.buyerAmount, resolved.sellerAmount, resolved.feeAmount) == (0, AMOUNT - FEE, FEE)
    pool_event = env.events(env.pool, "ArbitratorResolved", receipt)[0]["args"]
    assert (pool_event.arbitrator, pool_event.orderId, pool_event.earned) == (arbitrator, order_id, ARBITRATOR_FEE)


def test_dispute_owner_resolve_refused_before_deadline_and_allowed_after(env):
    order_id, arbitrator, _ = env.disputed_order()
    expect_revert(
        env.escrow.functions.ownerResolveDispute(order_id, False), env.owner, "DisputeDeadlineNotReached()"
    )
    expect_revert(
        env.escrow.functions.ownerResolveDispute(order_id, False),
        env.outsider,
        "OwnableUnauthorizedAccount(address)",
    )

    env.increase_time(3 * ONE_DAY + 1)
    receipt = env.tx(env.escrow.functions.ownerResolveDispute(order_id, False), env.owner)

    assert env.status(order_id) == RESOLVED_SELLER
    assert env.balance(env.seller) == AMOUNT - FEE
    assert env.balance(env.treasury) == FEE  # no arbitrator fee on owner resolution
    assert env.balance(arbitrator) == 0
    resolved = env.events(env.escrow, "DisputeResolved", receipt)[0]["args"]
    assert (resolved.resolver, resolved.favorBuyer, resolved.byOwner) == (env.owner, False, True)
    assert (resolved.buyerAmount, resolved.sellerAmount, resolved.feeAmount) == (0, AMOUNT - FEE, FEE)
    changed = env.events(env.pool, "ReputationChanged", receipt)[0]["args"]
    assert (changed.arbitrator, changed.oldReputation, changed.newReputation) == (arbitrator, 50, 35)
    assert env.pool.functions.openCases(arbitrator).call() == 0


def test_dispute_owner_resolve_for_buyer_refunds_in_full_and_works_while_paused(env):
    order_id, arbitrator, _ = env.disputed_order()
    env.increase_time(3 * ONE_DAY + 1)
    env.tx(env.escrow.functions.pause(), env.owner)
    receipt = env.tx(env.escrow.functions.ownerResolveDispute(order_id, True), env.owner)
    assert env.status(order_id) == RESOLVED_BUYER
    assert env.balance(env.buyer) == AMOUNT
    assert env.balance(env.treasury) == 0
    resolved = env.events(env.escrow, "DisputeResolved", receipt)[0]["args"]
    assert (resolved.buyerAmount, resolved.sellerAmount, resolved.feeAmount) == (AMOUNT, 0, 0)


def test_dispute_penalty_deactivates_low_reputation_arbitrator(env):
    order_id, arbitrator, _ = env.disputed_order()
    env.tx(env.pool.functions.setReputation(arbitrator, 20), env.owner)
    env.increase_time(3 * ONE_DAY + 1)
    receipt = env.tx(env.escrow.functions.ownerResolveDispute(order_id, True), env.owner)
    deactivated = env.events(env.pool, "ArbitratorDeactivated", receipt)[0]["args"]
    assert (deactivated.arbitrator, deactivated.reputation) == (arbitrator, 5)
    record = env.pool.functions.arbitrators(arbitrator).call()
    assert record[1] == 5 and record[4] is False and record[0] == STAKE
    assert env.pool.functions.activeArbitratorCount().call() == 2
    active = {env.pool.functions.activeArbitrators(i).call() for i in range(2)}
    assert arbitrator not in active


def test_dispute_without_eligible_arbitrator_reverts(env):
    for arbitrator in env.arbitrators:
        env.tx(env.pool.functions.deregister(), arbitrator)
    assert env.pool.functions.activeArbitratorCount().call() == 0
    order_id, _ = env.create_order()
    expect_revert(env.escrow.functions.openDispute(order_id, "cid"), env.buyer, "NoArbitratorAvailable()")


def test_dispute_never_assigns_a_party(env):
    # The only arbitrators left are the buyer and the seller themselves -> nobody eligible.
    for arbitrator in env.arbitrators:
        env.tx(env.pool.functions.deregister(), arbitrator)
    buyer, seller = env.arbitrators[0], env.arbitrators[1]
    env.tx(env.pool.functions.register(), buyer, value=STAKE)
    env.tx(env.pool.functions.register(), seller, value=STAKE)
    order_id, _ = env.create_order(buyer=buyer, seller=seller)
    expect_revert(env.escrow.functions.openDispute(order_id, "cid"), buyer, "NoArbitratorAvailable()")
    env.tx(env.pool.functions.register(), env.arbitrators[2], value=STAKE)
    env.tx(env.escrow.functions.openDispute(order_id, "cid"), buyer)
    assert env.order(order_id)[5] == env.arbitrators[2]


# ------------------------------------------------------------------------- arbitrators


def test_arbitrator_pool_register_and_deregister(env):
    newcomer = env.outsider
    expect_revert(env.pool.functions.register(), newcomer, "InsufficientStake(uint256,uint256)", value=STAKE - 1)
    receipt = env.tx(env.pool.functions.register(), newcomer, value=STAKE)
    registered = env.events(env.pool, "ArbitratorRegistered", receipt)[0]["args"]
    assert (registered.arbitrator, registered.stakeAmount, registered.reputation) == (newcomer, STAKE, 50)
    assert env.pool.functions.activeArbitratorCount().call() == 4
    assert env.pool.functions.activeArbitrators(3).call() == newcomer
    expect_revert(env.pool.functions.register(), newcomer, "AlreadyActive()", value=STAKE)

    balance_before = env.w3.eth.get_balance(newcomer)
    receipt = env.tx(env.pool.functions.deregister(), newcomer)
    deregistered = env.events(env.pool, "ArbitratorDeregistered", receipt)[0]["args"]
    assert (deregistered.arbitrator, deregistered.stakeReturned) == (newcomer, STAKE)
    gas = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert env.w3.eth.get_balance(newcomer) == balance_before + STAKE - gas
    assert env.pool.functions.activeArbitratorCount().call() == 3
    assert env.pool.functions.arbitrators(newcomer).call()[4] is False
    expect_revert(env.pool.functions.deregister(), newcomer, "NotActive()")

    # An arbitrator with an open case cannot leave.
    _, arbitrator, _ = env.disputed_order()
    expect_revert(env.pool.functions.deregister(), arbitrator, "HasOpenCases(uint256)")


def test_arbitrator_pool_only_escrow_can_assign(env):
    expect_revert(
        env.pool.functions.assignArbitrator(1, env.buyer, env.seller), env.owner, "NotEscrow()"
    )


# ------------------------------------------------------------------------------- admin


def test_pause_blocks_create_and_unpause_restores(env):
    receipt = env.tx(env.escrow.functions.pause(), env.owner)
    assert len(env.events(env.escrow, "Paused", receipt)) == 1
    assert env.escrow.functions.paused().call() is True
    env.tx(env.usdt.functions.mint(env.buyer, AMOUNT), env.buyer)
    env.tx(env.usdt.functions.approve(env.escrow.address, AMOUNT), env.buyer)
    expect_revert(
        env.escrow.functions.createOrder(env.seller, env.usdt.address, AMOUNT), env.buyer, "EnforcedPause()"
    )

    receipt = env.tx(env.escrow.functions.unpause(), env.owner)
    assert len(env.events(env.escrow, "Unpaused", receipt)) == 1
    env.tx(env.escrow.functions.createOrder(env.seller, env.usdt.address, AMOUNT), env.buyer)
    assert env.status(1) == FUNDED


def test_admin_setters_emit_events(env):
    f = env.escrow.functions
    receipt = env.tx(f.setTimeouts(60, 120, 180), env.owner)
    assert tuple(env.events(env.escrow, "TimeoutsUpdated", receipt)[0]["args"].values()) == (60, 120, 180)
    receipt = env.tx(f.setTreasury(env.outsider), env.owner)
    args = env.events(env.escrow, "TreasuryUpdated", receipt)[0]["args"]
    assert (args.oldTreasury, args.newTreasury) == (env.treasury, env.outsider)
    receipt = env.tx(f.setSupportedToken(env.usdc.address, False), env.owner)
    args = env.events(env.escrow, "SupportedTokenSet", receipt)[0]["args"]
    assert (args.token, args.supported) == (env.usdc.address, False)
    receipt = env.tx(f.setPlatformFeeBps(250), env.owner)
    args = env.events(env.escrow, "PlatformFeeUpdated", receipt)[0]["args"]
    assert (args.oldBps, args.newBps) == (100, 250)
    expect_revert(f.setTreasury("0x" + "00" * 20), env.owner, "ZeroAddress()")
    expect_revert(f.setTimeouts(0, 1, 1), env.owner, "InvalidTimeout()")
