"""Fixtures for the custody tests: a real anvil whose contracts a 2-of-3 Safe owns, and staff who hold its keys.

The staff's signatures come from anvil itself (`eth_signTypedData_v4` / `personal_sign` for its unlocked
accounts), never from the code under test, and the chain is read back with web3 directly. Test modules
import these fixtures with `from .custody_fixtures import *`.
"""
from __future__ import annotations

import json

import pytest
from web3 import Web3

from backoffice.devservices import (
    DEMO_SAFE_OWNERS,
    GUARDIAN_INDEX,
    KEEPER_INDEX,
    RELAYER_INDEX,
    anvil_key,
    running_anvil,
)
from chain.deploy import exec_safe_tx_unlocked, get_contract, load_artifact
from chain.transactions import reset_signer

from .conftest import STAKE, TOKEN_SUPPLY, LocalChain

__all__ = ["safe_chain_node", "safe_chain", "staff", "guarded", "sign_typed", "personal_sign", "register_key",
           "SafeChain"]


class SafeChain(LocalChain):
    """LocalChain plus the Safe, its module and the roles that have no key on the server."""

    def __post_init__(self):
        super().__post_init__()
        custody = self.data["custody"]
        self.safe = self.w3.eth.contract(address=Web3.to_checksum_address(custody["safe"]),
                                         abi=load_artifact("Safe")["abi"])
        self.module = get_contract(self.w3, "PauseGuardianModule", custody["guardian_module"])
        self.safe_owners = [Web3.to_checksum_address(a) for a in custody["owners"]]
        self.relayer = Web3.to_checksum_address(custody["relayer"])
        self.keeper = Web3.to_checksum_address(custody["keeper"])

    def safe_nonce(self) -> int:
        return self.safe.functions.nonce().call()

    def sent_by(self, address: str, from_block: int) -> list:
        out = []
        for number in range(from_block, self.head() + 1):
            for tx in self.w3.eth.get_block(number, full_transactions=True)["transactions"]:
                if tx["from"] == Web3.to_checksum_address(address):
                    out.append(tx)
        return out

    def exec_as_owners(self, fn) -> None:
        """A Safe transaction made outside the back office (the owners' own tools): consumes a Safe nonce."""
        exec_safe_tx_unlocked(self.w3, self.safe, to=fn.address, data=fn._encode_transaction_data(),
                              owners=self.safe_owners[:2])

    def as_safe(self, fn) -> None:
        """A call made by the Safe itself without a SafeTx (as a module could): the Safe's nonce does not move."""
        safe = self.safe.address
        self.rpc("anvil_impersonateAccount", [safe])
        self.rpc("anvil_setBalance", [safe, hex(10**20)])
        try:
            self.send(fn, safe)
        finally:
            self.rpc("anvil_stopImpersonatingAccount", [safe])


@pytest.fixture(scope="module")
def safe_chain_node(tmp_path_factory) -> SafeChain:
    from chain.local import deploy_local

    with running_anvil("bsc", block_time="") as (_proc, url):
        path = tmp_path_factory.mktemp("safe-deployment") / "deployment.json"
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "safe"}}, path=path)["bsc"]
        node = SafeChain(url, path, data, Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30})))
        for trader in node.accounts[10:16]:
            for token in node.tokens.values():
                node.send(token.functions.mint(trader, TOKEN_SUPPLY), trader)
                node.send(token.functions.approve(node.escrow.address, 2**256 - 1), trader)
        for arbitrator in node.accounts[2:5]:
            node.send(node.pool.functions.register(), arbitrator, value=STAKE)
        yield node


@pytest.fixture
def safe_chain(safe_chain_node, settings):
    """The back office in safe custody: no owner key, only the relayer's and the keeper's."""
    from chain import rpc, transactions

    settings.CHAIN_DEPLOYMENT_FILE = safe_chain_node.path
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "owner_mode": "safe"}}
    settings.OWNER_KEY = settings.OWNER_KEYSTORE = ""
    settings.RELAYER_KEY = anvil_key(RELAYER_INDEX)
    settings.KEEPER_KEY = anvil_key(KEEPER_INDEX)
    rpc.reset_clients()
    transactions.reset_signer()
    with safe_chain_node.reverted():
        yield safe_chain_node
    rpc.reset_clients()
    transactions.reset_signer()


def sign_typed(node: LocalChain, account: str, typed: dict) -> str:
    """anvil signs the typed data for its unlocked account, as a browser wallet would."""
    return node.rpc("eth_signTypedData_v4", [account, json.dumps(typed)])


def personal_sign(node: LocalChain, account: str, message: str) -> str:
    return node.rpc("personal_sign", ["0x" + message.encode().hex(), account])


def register_key(node: LocalChain, user, account: str):
    from ops.actions import services as actions

    challenge = actions.signing_key_challenge(user=user)
    return actions.register_signing_key(actor=user, address=account, challenge=challenge,
                                        signature=personal_sign(node, account, challenge))


@pytest.fixture
def staff(safe_chain, django_user_model):
    """alice, bob and carol: the Safe's three owners, each with their key registered; dave has no Safe role."""
    people = {}
    for name, index in zip(("alice", "bob", "carol"), DEMO_SAFE_OWNERS, strict=False):
        user = django_user_model.objects.create_user(name, password=f"{name}-password-1", is_staff=True,
                                                     is_superuser=True)
        register_key(safe_chain, user, safe_chain.accounts[index])
        user.account = safe_chain.accounts[index]
        people[name] = user
    dave = django_user_model.objects.create_user("dave", password="dave-password-1", is_staff=True,
                                                 is_superuser=True)
    register_key(safe_chain, dave, safe_chain.accounts[30])
    dave.account = safe_chain.accounts[30]
    people["dave"] = dave
    return people


@pytest.fixture
def guarded(safe_chain, settings):
    """The chain in safe custody with its automatic pause on and the server's guardian key (anvil account 45, a
    guardian of the pause module and nothing else)."""
    settings.GUARDIAN_KEY, settings.GUARDIAN_KEYSTORE = anvil_key(GUARDIAN_INDEX), ""
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "auto_pause": "on"}}
    reset_signer()
    yield safe_chain
    reset_signer()
