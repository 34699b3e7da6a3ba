"""The sanctions oracle on anvil, through the sync: a wallet the local SanctionsOracle lists trades, one sync run
mirrors it and wakes the screening, and the screening (batched oracle calls at one block) blacklists it with the
oracle and block as evidence and flags its open order; an oracle that cannot be reached leaves wallets queued."""
from __future__ import annotations

import pytest
from web3 import Web3

from backoffice.alerts.models import Alert
from chain import deploy, rpc
from chain import tasks as chain_tasks
from chain.models import Order
from disputes import signals
from disputes.models import Blacklist, SanctionsHit, SanctionsOracleCheck, SanctionsScreening
from disputes.sanctions.services import screen_new_wallets
from tests import factories as f
from tests.chain.conftest import Deployment, Market, Node, calldata, dead_url

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def market_chain(tmp_path_factory):
    """A node with the contracts and an oracle listing nobody, a small market, then one buyer of an order still open
    listed by the oracle's owner (as Chainalysis lists an address after it has traded)."""
    from backoffice.devservices import running_anvil
    from chain.local import deploy_local

    with running_anvil("bsc", block_time="", extra=["--gas-limit", "1000000000"]) as (_proc, url):
        node = Node(url)
        path = tmp_path_factory.mktemp("sanctions") / "deployment.json"
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}}, path=path)["bsc"]
        deployment = Deployment(url, path, data)
        summary = Market(node, deployment).run(30)
        open_order = min(oid for oid, fate in summary.fates.items() if fate == "funded")
        w3 = Web3(Web3.HTTPProvider(url))
        oracle = deploy.get_contract(w3, "SanctionsOracle", data["sanctions_oracle"])
        buyer = w3.to_checksum_address("0x" + w3.eth.call({"to": w3.to_checksum_address(deployment.escrow),
                                                            "data": calldata("orders(uint256)", open_order)})
                                       .hex()[24:64])
        tx = oracle.functions.addToSanctionsList([buyer]).transact({"from": w3.to_checksum_address(node.accounts[0])})
        w3.eth.wait_for_transaction_receipt(tx)
        yield node, deployment, open_order, buyer.lower()


@pytest.fixture
def settings_for(market_chain, settings):
    _, deployment, _, _ = market_chain
    settings.CHAIN_DEPLOYMENT_FILE = deployment.path
    rpc.reset_clients()
    yield settings
    rpc.reset_clients()


def test_a_listed_wallet_is_blacklisted_and_its_order_flagged_within_one_sync(market_chain, settings_for, monkeypatch,
                                                                              django_capture_on_commit_callbacks):
    node, deployment, open_order, listed = market_chain
    woken = []
    monkeypatch.setattr(signals, "send_task", lambda name, **kw: woken.append(name))

    result = chain_tasks.sync_chain("bsc")  # the beat's task: one sync run

    assert result["events"] > 0 and woken == ["disputes.tasks.screen_new_wallets"], "the sync woke the screening"
    queued = SanctionsScreening.objects.pending().count()
    assert queued >= 26  # traders and arbitrators the market used
    with django_capture_on_commit_callbacks(execute=True):
        screened = screen_new_wallets()  # what the woken task runs, on the checks queue

    assert screened.screened == queued and not SanctionsScreening.objects.pending().exists()
    assert screened.oracle_requests == 1 + -(-queued // 100), "one eth_blockNumber, then a batch per 100 wallets"
    [hit] = screened.hits
    assert (hit.wallet, hit.source, hit.chain, hit.oracle) == (listed, "oracle", "bsc",
                                                               deployment.data["sanctions_oracle"].lower())
    assert hit.block == node.head(), "confirmations 0: the oracle was read at the head"
    entry = Blacklist.objects.active().get(wallet=listed)
    assert entry.source == "sanctions" and f"at block {hit.block}" in entry.reason
    order = Order.objects.get(chain="bsc", onchain_id=open_order)
    flagged = set(hit.orders.values_list("onchain_id", "role", "status"))
    assert (order.onchain_id, "buyer", "funded") in flagged and hit.open_orders == len(flagged)
    assert Alert.objects.get(key=f"sanctions-hit:{listed}").severity == "P1"
    check = SanctionsOracleCheck.objects.get(chain="bsc")
    assert (check.last_block, check.wallets_checked, check.last_error) == (hit.block, queued, "")
    assert SanctionsScreening.objects.filter(listed=True).count() == 1


def test_wallets_wait_queued_while_the_oracle_cannot_be_reached(market_chain, settings_for, tmp_path):
    _, deployment, _, _ = market_chain
    down = dead_url()
    settings_for.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "down.json", rpc_url=down,
                                                                  rpc_fallback=down)
    rpc.reset_clients()
    profile = f.profile(first_seen_chain="bsc")
    result = screen_new_wallets()

    assert result.screened == 0 and "bsc" in result.failed_chains
    assert SanctionsScreening.objects.pending().filter(wallet=profile.wallet).exists()
    assert SanctionsOracleCheck.objects.get(chain="bsc").last_error
    assert Alert.objects.get(key="sanctions-oracle:bsc").severity == "P2"
    assert not SanctionsHit.objects.exists()

    settings_for.CHAIN_DEPLOYMENT_FILE = deployment.path  # the oracle answers again: its P2 resolves
    rpc.reset_clients()
    screen_new_wallets()
    assert Alert.objects.get(key="sanctions-oracle:bsc").state == "resolved"
