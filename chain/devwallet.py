"""Development only: the local anvil signs for its unlocked accounts, standing in for a staff member's wallet.

`make run` has no browser wallet holding the demo owners' keys; anvil holds them. Production never
reaches this module (`available()` is false there), and it signs only for an address the caller
has already checked is the signed-in person's registered key.
"""
from __future__ import annotations

import json

from django.conf import settings

from .config import configured_chains, get_chain_config
from .rpc import get_client


def available() -> bool:
    return not settings.PRODUCTION and settings.CHAIN_DEPLOYMENT_FILE.exists()


def sign_typed_data(address: str, typed: dict) -> str:
    chain_id = int(typed.get("domain", {}).get("chainId", 0))
    chain = next((c for c in configured_chains() if get_chain_config(c).chain_id == chain_id), None)
    if chain is None:
        raise ValueError(f"no local chain with chain id {chain_id}")
    return get_client(chain).call("eth_signTypedData_v4", [address, json.dumps(typed)])
