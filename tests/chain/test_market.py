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
        started = time.monotonic()
        # Trade for at least 12 s, and on (up to a minute, on a loaded machine) until a timeout has fired.
        while time.monotonic() - started < 12 or (
                driver.stats["expire"] + driver.stats["auto_release"] == 0 and time.monotonic() - started < 60):
            driver.step()
            time.sleep(0.05)
        block = w3.eth.get_block("latest")
        assert abs(block["timestamp"] - time.time()) < 60, "the market moved the chain's clock"
        # Deadlines of seconds passed on their own: orders expired or were auto-released without a clock jump.
        assert driver.stats["expire"] + driver.stats["auto_release"] > 0, dict(driver.stats)

