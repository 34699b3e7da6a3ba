"""Deploy the escrow contracts from the committed build artifacts, and put them in a Safe's custody.

Framework-free on purpose (no Django imports): the Django ``chain`` package, management
commands and the contract tests all use it. Artifacts are produced by
``node chain/contracts/build.js`` and live in ``chain/artifacts/<Name>.json`` (the Safe's are
copied from its npm release).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"

DEFAULT_TOKENS: tuple[tuple[str, str, int], ...] = (
    ("USDT", "Tether USD", 18),
    ("USDC", "USD Coin", 6),
)
DEFAULT_MIN_STAKE = 10**17
RECEIPT_TIMEOUT = 120
ZERO_ADDRESS = "0x" + "00" * 20


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


def deploy_sanctions_oracle(w3, owner: str, listed: Iterable[str] = ()) -> str:
    """Deploy a SanctionsOracle (the Chainalysis oracle's interface) listing ``listed`` from the start; ``owner``
    (an unlocked account) sends it and may list and delist later. Returns its checksummed address."""
    contract, _ = _deploy(w3, "SanctionsOracle", w3.to_checksum_address(owner),
                          [w3.to_checksum_address(a) for a in listed])
    return contract.address


# ---------------------------------------------------------------------------- Safe custody


def set_timeouts(w3, escrow: str, owner: str, seller: int, buyer: int, dispute: int) -> None:
    """The escrow's seller, buyer and dispute windows in seconds (the owner's setTimeouts)."""
    _transact(w3, get_contract(w3, "P2PEscrow", escrow).functions.setTimeouts(int(seller), int(buyer), int(dispute)),
              owner, "P2PEscrow.setTimeouts")


def deploy_safe(w3, *, owners: list[str], threshold: int, sender: str, salt: int = 0):
    """Deploy a Safe v1.4.1 singleton and proxy factory, and a Safe proxy set up with ``owners`` and ``threshold``.

    No fallback handler, guard or module at setup; ``sender`` (an unlocked account) pays. Returns the web3
    Safe contract at the proxy's address.
    """
    owners = [w3.to_checksum_address(o) for o in owners]
    if not 1 <= threshold <= len(owners):
        raise ValueError(f"threshold {threshold} is not between 1 and the number of owners ({len(owners)})")
    sender = w3.to_checksum_address(sender)
    singleton, _ = _deploy(w3, "Safe", sender)
    factory, _ = _deploy(w3, "SafeProxyFactory", sender)
    setup = singleton.encode_abi("setup", args=[owners, int(threshold), ZERO_ADDRESS, b"", ZERO_ADDRESS,
                                                ZERO_ADDRESS, 0, ZERO_ADDRESS])
    receipt = _transact(w3, factory.functions.createProxyWithNonce(singleton.address, setup, int(salt)), sender,
                        "SafeProxyFactory.createProxyWithNonce")
    # The Safe's own SafeSetup log shares the receipt: only the factory's event is decoded.
    created = factory.events.ProxyCreation().process_receipt(receipt, errors=DISCARD)
    if len(created) != 1:
        raise DeploymentError("SafeProxyFactory.createProxyWithNonce emitted no ProxyCreation event")
    return get_contract(w3, "Safe", created[0]["args"]["proxy"])


def _approved_hash_signature(owner: str) -> bytes:
    """Safe's pre-approved signature: r = the owner (left-padded), s = 0, v = 1."""
    return bytes(12) + bytes.fromhex(owner[2:]) + bytes(32) + b"\x01"


def exec_safe_tx_unlocked(w3, safe, *, to: str, data: bytes | str, owners: list[str]):
    """Execute a call from the Safe, approved by ``owners``: unlocked anvil accounts (local and test setup only).

    Every owner but the first approves the Safe's own transaction hash on chain (``approveHash``); the first
    sends ``execTransaction``, which counts its own approval as the sender. Fewer owners than the threshold
    make the Safe revert (GS020). Raises DeploymentError if the call reverts or the Safe reports its failure.
    Returns the execTransaction receipt.
    """
    if not hasattr(safe, "functions"):
        safe = get_contract(w3, "Safe", safe)
    if not owners:
        raise ValueError("exec_safe_tx_unlocked needs at least one owner to send the transaction")
    owners = [w3.to_checksum_address(o) for o in owners]
    to = w3.to_checksum_address(to)
    data = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    safe_tx = (to, 0, data, 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS)  # a plain call: value 0, no gas refund
    tx_hash = safe.functions.getTransactionHash(*safe_tx, safe.functions.nonce().call()).call()
    # The Safe requires signatures ordered by owner address, ascending.
    signatures = b"".join(_approved_hash_signature(o) for o in sorted(set(owners), key=lambda a: int(a, 16)))
    try:
        for owner in owners[1:]:
            _transact(w3, safe.functions.approveHash(tx_hash), owner, f"Safe.approveHash by {owner}")
        receipt = _transact(w3, safe.functions.execTransaction(*safe_tx, signatures), owners[0],
                            "Safe.execTransaction")
    except ContractLogicError as exc:  # refused at gas estimation: the revert reason names the Safe's check
        reason = getattr(exc, "message", None) or str(exc)
        raise DeploymentError(f"Safe {safe.address}: transaction to {to} reverted ({reason})") from exc
    # With safeTxGas 0 a failed inner call reverts the whole transaction; the event check covers any other case.
    if safe.events.ExecutionFailure().process_receipt(receipt, errors=DISCARD):
        raise DeploymentError(f"Safe {safe.address}: the call to {to} failed (ExecutionFailure)")
    return receipt


def deploy_guardian_module(w3, *, safe: str, escrow: str, guardians: list[str], sender: str):
    """Deploy a PauseGuardianModule for ``safe`` and ``escrow``; the Safe must still enable it (enableModule)."""
    module, _ = _deploy(w3, "PauseGuardianModule", w3.to_checksum_address(sender), w3.to_checksum_address(safe),
                        w3.to_checksum_address(escrow), [w3.to_checksum_address(g) for g in guardians])
    return module


def install_safe_custody(w3, deployment: dict[str, Any], *, owners: list[str], threshold: int,
                         guardians: list[str], deployer: str) -> dict[str, Any]:
    """Hand a deploy_all deployment over to a new Safe with a guardian module (local and test chains).

    Deploys the Safe and the module, enables the module through a Safe transaction the first ``threshold``
    owners approve (unlocked accounts), then transfers ownership of the escrow and the arbitrator pool from
    ``deployer`` (their current owner) to the Safe. Returns ``{"mode": "safe", "safe", "owners", "threshold",
    "guardian_module", "guardians"}`` with checksummed addresses.
    """
    deployer = w3.to_checksum_address(deployer)
    owners = [w3.to_checksum_address(o) for o in owners]
    safe = deploy_safe(w3, owners=owners, threshold=threshold, sender=deployer)
    module = deploy_guardian_module(w3, safe=safe.address, escrow=deployment["escrow"], guardians=guardians,
                                    sender=deployer)
    exec_safe_tx_unlocked(w3, safe, to=safe.address, data=safe.encode_abi("enableModule", args=[module.address]),
                          owners=owners[:threshold])
    # Ownership moves last: if anything before fails, the contracts still belong to the deployer.
    for name, key in (("P2PEscrow", "escrow"), ("ArbitratorPool", "arbitrator_pool")):
        contract = get_contract(w3, name, deployment[key])
        _transact(w3, contract.functions.transferOwnership(safe.address), deployer, f"{name}.transferOwnership")
        if contract.functions.owner().call() != safe.address:
            raise DeploymentError(f"{name} at {contract.address} is not owned by the Safe after transferOwnership")
    return {
        "mode": "safe",
        "safe": safe.address,
        "owners": owners,
        "threshold": int(threshold),
        "guardian_module": module.address,
        "guardians": [w3.to_checksum_address(g) for g in guardians],
    }
