"""The local development chains: deploy the contracts to fresh anvil nodes and record the deployment."""
from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from web3 import Web3

from . import deploy, seeding



def deploy_local(chains: dict[str, dict], *, path: Path | None = None) -> dict:
    """Deploy to each {chain: {"rpc_url", "chain_id", "confirmations"}} and write the deployment file.

    Account 0 of the node owns the contracts, account 1 is the treasury.
    """
    out = {}
    for chain, spec in chains.items():
        w3 = Web3(Web3.HTTPProvider(spec["rpc_url"], request_kwargs={"timeout": 30}))
        owner, treasury = w3.eth.accounts[0], w3.eth.accounts[1]
        result = deploy.deploy_all(w3, owner, treasury)
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
        }
    path = path or settings.CHAIN_DEPLOYMENT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    return out


def reset_mirror() -> None:
    """A fresh local chain means a fresh mirror (seeding.reset: every table the sync fills, not the audit log)."""
    seeding.reset()
