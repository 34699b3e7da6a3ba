"""The local development chains: deploy the contracts to fresh anvil nodes and record the deployment."""
from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from web3 import Web3

from backoffice.devservices import ANVIL_ACCOUNTS, DEMO_SAFE_OWNERS, GUARDIAN_INDEX, KEEPER_INDEX, RELAYER_INDEX

from . import deploy, seeding

CUSTODY_MODES = ("safe", "eoa")
SAFE_THRESHOLD = 2


def deploy_local(chains: dict[str, dict], *, path: Path | None = None) -> dict:
    """Deploy to each {chain: {"rpc_url", "confirmations", "custody", "timeouts", "sanctioned"}} and write the
    deployment file.

    `timeouts` (seller, buyer, dispute), in seconds, replaces the contract's days with what a demo can watch
    happen in real time (make run): the chain's clock then never has to be pushed ahead of the wall clock.

    Account 0 of the node deploys (and in eoa custody owns) the contracts, account 1 is the treasury. In
    "safe" custody (the default) a 2-of-3 Safe of accounts 40, 41 and 42 owns them, the same three are the
    guardians of its PauseGuardianModule, with account 45, the server's own guardian key (the automatic pause: it
    can pause and nothing else). Accounts 43 (relayer) and 44 (keeper) have no role in any contract.

    Each chain also gets a SanctionsOracle (the Chainalysis oracle's interface) listing `sanctioned`: anvil account
    numbers or addresses (make run: `devservices.DEMO_SANCTIONED`, wallets the demo market trades from).
    """
    for chain, spec in chains.items():
        if spec.get("custody", "safe") not in CUSTODY_MODES:
            raise ValueError(f"{chain}: custody {spec['custody']!r} is not one of {', '.join(CUSTODY_MODES)}")
    out = {}
    for chain, spec in chains.items():
        mode = spec.get("custody", "safe")
        w3 = Web3(Web3.HTTPProvider(spec["rpc_url"], request_kwargs={"timeout": 30}))
        accounts = w3.eth.accounts
        if len(accounts) < ANVIL_ACCOUNTS:
            raise ValueError(f"{chain}: the node at {spec['rpc_url']} has {len(accounts)} unlocked accounts, "
                             f"{ANVIL_ACCOUNTS} are needed: start anvil with --accounts {ANVIL_ACCOUNTS}")
        deployer, treasury = accounts[0], accounts[1]
        result = deploy.deploy_all(w3, deployer, treasury)
        if spec.get("timeouts"):
            deploy.set_timeouts(w3, result["escrow"], deployer, *spec["timeouts"])  # before the Safe owns it
        roles = {"relayer": accounts[RELAYER_INDEX], "keeper": accounts[KEEPER_INDEX]}
        if mode == "safe":
            staff = [accounts[i] for i in DEMO_SAFE_OWNERS]
            custody = {**deploy.install_safe_custody(w3, result, owners=staff, threshold=SAFE_THRESHOLD,
                                                     guardians=[*staff, accounts[GUARDIAN_INDEX]],
                                                     deployer=deployer), **roles}
            owner = custody["safe"]
        else:
            custody, owner = {"mode": "eoa", **roles}, deployer
        # Last, so that every address above is what it was before the oracle existed (the deployer's nonces).
        listed = [accounts[a] if isinstance(a, int) else a for a in spec.get("sanctioned", ())]
        oracle = deploy.deploy_sanctions_oracle(w3, deployer, listed)
        out[chain] = {
            "rpc_url": spec["rpc_url"],
            # The same node under another name: a second provider for the failover path.
            "rpc_fallback": spec["rpc_url"].replace("127.0.0.1", "localhost"),
            "chain_id": w3.eth.chain_id,
            "escrow": result["escrow"],
            "arbitrator_pool": result["arbitrator_pool"],
            "tokens": result["tokens"],
            "deploy_block": result["deploy_block"],
            "confirmations": spec.get("confirmations", 2),
            "owner": owner,
            "treasury": treasury,
            "custody": custody,
            "timeouts": list(spec["timeouts"]) if spec.get("timeouts") else None,
            "sanctions_oracle": oracle,
            "sanctioned": listed,
        }
    path = path or settings.CHAIN_DEPLOYMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def reset_mirror() -> None:
    """A fresh local chain means a fresh mirror (seeding.reset: every table the sync fills, not the audit log)."""
    seeding.reset()
