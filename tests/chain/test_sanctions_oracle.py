"""The sanctions oracle on anvil (chain.sanctions): the local SanctionsOracle answers isSanctioned as the Chainalysis
oracle does, many wallets are asked in a few JSON-RPC batches at one block, and an address that is no oracle is an
error naming the variable, never a clean answer."""
from __future__ import annotations

import pytest
from web3 import Web3

from chain import deploy, sanctions
from chain.config import get_chain_config
from chain.rpc import RpcClient
from tests import factories as f

pytestmark = [pytest.mark.anvil]


@pytest.fixture(scope="module")
def listed(anvil_node) -> list[str]:
    return [a.lower() for a in anvil_node.accounts[36:38]]


@pytest.fixture(scope="module")
def oracle(anvil_node, listed) -> str:
    w3 = Web3(Web3.HTTPProvider(anvil_node.url))
    return deploy.deploy_sanctions_oracle(w3, anvil_node.accounts[0], listed).lower()


@pytest.fixture
def oracle_settings(chain_settings, deployment, oracle, tmp_path):
    chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "deployment.json",
                                                                    sanctions_oracle=oracle)
    return chain_settings


def test_local_deployment_deploys_an_oracle_for_each_chain(deployment):
    assert Web3.is_address(deployment.data["sanctions_oracle"])
    assert deployment.data["sanctioned"] == []


def test_oracle_names_the_listed_wallets_in_a_few_batched_requests(oracle_settings, faulty_rpc, anvil_node, listed,
                                                                   oracle):
    proxy = faulty_rpc()
    client = RpcClient("bsc", [("primary", proxy.url)])
    wallets = [f.wallet(10_000 + i) for i in range(2 * sanctions.ORACLE_BATCH + 30)] + listed

    answer = sanctions.check_wallets("bsc", wallets, client=client)

    assert answer.listed == frozenset(listed)
    assert answer.oracle == oracle and answer.block == anvil_node.head() - get_chain_config("bsc").confirmations
    batches = [body for _, body in proxy.requests if isinstance(body, list)]
    assert [len(b) for b in batches] == [100, 100, 32], "one request per ORACLE_BATCH wallets, never one per wallet"
    assert {call["params"][1] for batch in batches for call in batch} == {hex(answer.block)}, "all at one block"
    assert len(proxy.requests) == answer.requests == 4  # eth_blockNumber, then three batches


def test_oracle_address_without_a_contract_is_an_error_naming_the_variable(oracle_settings, deployment, tmp_path):
    oracle_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "eoa.json",
                                                                     sanctions_oracle=f.wallet(0xDEAD))
    with pytest.raises(sanctions.OracleError, match="no contract.*SANCTIONS_ORACLE"):
        sanctions.check_wallets("bsc", [f.wallet(1)])


def test_oracle_that_is_another_contract_is_an_error(oracle_settings, deployment, tmp_path):
    # The escrow has no isSanctioned: its fallback-less dispatch reverts, which must not read as "not listed".
    oracle_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "escrow.json",
                                                                     sanctions_oracle=deployment.escrow)
    with pytest.raises(sanctions.OracleError, match="refused isSanctioned"):
        sanctions.check_wallets("bsc", [f.wallet(1)])


def test_chain_without_an_oracle_is_refused_by_name(chain_settings, deployment, tmp_path):
    chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "none.json", sanctions_oracle="")
    assert sanctions.oracle_address("bsc") == ""
    with pytest.raises(sanctions.OracleError, match="no sanctions oracle is configured"):
        sanctions.check_wallets("bsc", [f.wallet(1)])


def test_environment_oracle_wins_over_the_local_deployment(chain_settings, oracle):
    chain_settings.CHAINS = {**chain_settings.CHAINS,
                             "bsc": {**chain_settings.CHAINS["bsc"], "sanctions_oracle": f.wallet(0xBEEF)}}
    assert sanctions.oracle_address("bsc") == f.wallet(0xBEEF)


def test_oracle_variable_is_read_per_chain_lower_cased():
    from backoffice.chain_settings import CHAINALYSIS_SANCTIONS_ORACLE, chains_from_env

    chains = chains_from_env({"ETH_SANCTIONS_ORACLE": "0x40C57923924B5c5c5455c48D93317139ADDaC8fb"}, production=False)
    assert chains["ethereum"]["sanctions_oracle"] == CHAINALYSIS_SANCTIONS_ORACLE
    assert chains["bsc"]["sanctions_oracle"] == ""


def test_oracle_variable_that_is_no_address_is_refused_naming_it_and_the_fix():
    from django.core.exceptions import ImproperlyConfigured

    from backoffice.chain_settings import chains_from_env

    with pytest.raises(ImproperlyConfigured, match=r"BSC_SANCTIONS_ORACLE is '0x40c5': use the oracle contract's "
                                                   r"address, 0x followed by 40 hex digits \(0x40c5"):
        chains_from_env({"BSC_SANCTIONS_ORACLE": "0x40C5"}, production=False)
