"""make run's market on a node of its own: minute-long windows, and a chain clock that stays the wall clock."""
from __future__ import annotations

import time

import pytest
from web3 import Web3

from backoffice.devservices import running_anvil
from chain.deploy import get_contract
from chain.market import MarketDriver

pytestmark = pytest.mark.anvil


def test_market_steps_keep_the_chain_clock_on_the_wall_clock_and_timeouts_fire_in_real_time(tmp_path):
    from chain.local import deploy_local

    seller, buyer, dispute = 2, 2, 3  # seconds here; make run uses minutes (LOCAL_TIMEOUTS)
    with running_anvil("bsc", block_time="") as (_proc, url):
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "safe",
                                     "timeouts": (seller, buyer, dispute)}}, path=tmp_path / "deployment.json")["bsc"]
        w3 = Web3(Web3.HTTPProvider(url))
        escrow = get_contract(w3, "P2PEscrow", data["escrow"])
        assert (escrow.functions.sellerTimeout().call(), escrow.functions.buyerTimeout().call(),
                escrow.functions.disputeTimeout().call()) == (seller, buyer, dispute)
        assert escrow.functions.owner().call() == Web3.to_checksum_address(data["custody"]["safe"])
        driver = MarketDriver(w3, data, seed=5, url=url)
        driver.setup()  # traders funded and approved, arbitrators staked: not part of the timed trading
        started = time.monotonic()
        while time.monotonic() - started < 12:
            driver.step()
            time.sleep(0.05)
        block = w3.eth.get_block("latest")
        assert abs(block["timestamp"] - time.time()) < 60, "the market moved the chain's clock"

        # A deadline of seconds passes on its own, in real time: the public timeout call succeeds, no clock jump.
        # (Shown on one order of our own rather than by the market's random walk, which a loaded machine slows.)
        buyer_wallet, seller_wallet = (Web3.to_checksum_address(a) for a in driver.traders[:2])
        token = Web3.to_checksum_address(next(iter(data["tokens"].values())))
        order_id = escrow.functions.nextOrderId().call()
        w3.eth.wait_for_transaction_receipt(
            escrow.functions.createOrder(seller_wallet, token, 10**6).transact({"from": buyer_wallet}), timeout=30)
        time.sleep(seller + 1.5)
        w3.provider.make_request("evm_mine", [])  # an idle auto-mined node's newest block is stamped now, not moved
        receipt = w3.eth.wait_for_transaction_receipt(
            escrow.functions.autoExpireOrder(order_id).transact({"from": w3.eth.accounts[5]}), timeout=30)
        assert receipt["status"] == 1
        assert abs(w3.eth.get_block(receipt["blockNumber"])["timestamp"] - time.time()) < 60
