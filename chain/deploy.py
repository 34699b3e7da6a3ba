"""Deploy the escrow contracts from the committed build artifacts.

Framework-free on purpose (no Django imports): the Django ``chain`` package, management
commands and the contract tests all use it. Artifacts are produced by
``node chain/contracts/build.js`` and live in ``chain/artifacts/<Name>.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"

DEFAULT_TOKENS: tuple[tuple[str, str, int], ...] = (
    ("USDT", "Tether USD", 18),
    ("USDC", "USD Coin", 6),
)
DEFAULT_MIN_STAKE = 10**17
RECEIPT_TIMEOUT = 120


class DeploymentError(RuntimeError):
    """A deployment or setup transaction was mined but reverted (status 0)."""


def load_artifact(name: str) -> dict[str, Any]:
    """Return the artifact dict (contractName, abi, bytecode, deployedBytecode, solcVersion)."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"artifact {path} not found; run `make contracts` (node chain/contracts/build.js)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def get_contract(w3, name: str, address: str):
    """A web3 contract instance for a deployed contract of artifact ``name``."""
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=load_artifact(name)["abi"])


def _wait(w3, tx_hash, what: str):
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=RECEIPT_TIMEOUT)
    if receipt["status"] != 1:
        raise DeploymentError(f"{what} reverted (tx {tx_hash.hex()}, block {receipt['blockNumber']})")
    return receipt


def _deploy(w3, name: str, sender: str, *args):
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx_hash = factory.constructor(*args).transact({"from": sender})
    receipt = _wait(w3, tx_hash, f"deploying {name}")
    address = receipt["contractAddress"]
    if not address:
        raise DeploymentError(f"deploying {name}: receipt has no contractAddress")
    return w3.eth.contract(address=w3.to_checksum_address(address), abi=artifact["abi"]), receipt


def _transact(w3, fn, sender: str, what: str):
    return _wait(w3, fn.transact({"from": sender}), what)


def deploy_all(
    w3,
    owner: str,
    treasury: str,
    *,
    tokens: Iterable[tuple[str, str, int]] = DEFAULT_TOKENS,
    min_stake: int = DEFAULT_MIN_STAKE,
) -> dict[str, Any]:
    """Deploy ArbitratorPool, P2PEscrow and the test tokens, and wire them together.

    ``owner`` must be an account the node can sign for (an unlocked anvil account); it pays
    for and sends every transaction and becomes the owner of both contracts.
    ``tokens`` is an iterable of ``(symbol, name, decimals)``.

    Returns ``{"escrow", "arbitrator_pool", "tokens": {symbol: address}, "deploy_block"}`` with
    checksummed addresses; ``deploy_block`` is the block of the first deployment (a safe
    starting point for event scans).
    """
    owner = w3.to_checksum_address(owner)
    treasury = w3.to_checksum_address(treasury)

    pool, pool_receipt = _deploy(w3, "ArbitratorPool", owner, int(min_stake), owner)
    escrow, _ = _deploy(w3, "P2PEscrow", owner, treasury, pool.address, owner)
    _transact(w3, pool.functions.setEscrow(escrow.address), owner, "ArbitratorPool.setEscrow")

    token_addresses: dict[str, str] = {}
    for symbol, name, decimals in tokens:
        token, _ = _deploy(w3, "TestToken", owner, name, symbol, int(decimals))
        _transact(
            w3,
            escrow.functions.setSupportedToken(token.address, True),
            owner,
            f"P2PEscrow.setSupportedToken({symbol})",
        )
        token_addresses[symbol] = token.address

    return {
        "escrow": escrow.address,
        "arbitrator_pool": pool.address,
        "tokens": token_addresses,
        "deploy_block": int(pool_receipt["blockNumber"]),
    }
