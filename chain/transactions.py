"""Back-office transactions on the chain: simulate, quote fees, sign with a role's key, broadcast, read receipts.

The typed doorway the contract-action services use; they never see web3 or the key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from django.conf import settings
from django.views.decorators.debug import sensitive_variables

from .calls import decode_revert
from .rpc import RpcError, get_client


class SignerUnavailable(RuntimeError):
    """No usable key is configured for a signing role. The message never contains key material."""


@dataclass(frozen=True)
class Simulation:
    ok: bool
    reason: str
    gas: int | None
    block: int

    def as_dict(self) -> dict:
        return {"ok": self.ok, "reason": self.reason, "gas": self.gas, "block": self.block}


@dataclass(frozen=True)
class SignedTx:
    raw: str
    tx_hash: str


# The server's signing roles and their settings prefix. "owner" exists only in eoa custody; in safe
# custody the server holds the relayer (pays gas for execTransaction, no role in any contract) and
# the keeper (calls the public timeout functions), and may hold a guardian of the pause module (the automatic
# pause: the module lets it pause and nothing else).
ROLES = {"owner": "OWNER", "relayer": "RELAYER", "keeper": "KEEPER", "guardian": "GUARDIAN"}


@lru_cache(maxsize=None)
@sensitive_variables()
def _account(role: str = "owner"):
    from eth_account import Account

    prefix = ROLES[role]
    key = getattr(settings, f"{prefix}_KEY", "")
    keystore = getattr(settings, f"{prefix}_KEYSTORE", "")
    if key:
        try:
            return Account.from_key(key)
        except Exception:
            raise SignerUnavailable(f"{prefix}_KEY is not a valid private key (32 bytes, hex).") from None
    if keystore:
        path = Path(keystore)
        if not path.is_file():
            raise SignerUnavailable(f"{prefix}_KEYSTORE points to {path}, which is not a file.")
        try:
            secret = Account.decrypt(json.loads(path.read_text()), getattr(settings, f"{prefix}_KEYSTORE_PASSWORD", ""))
            return Account.from_key(secret)
        except Exception:
            raise SignerUnavailable(f"{prefix}_KEYSTORE could not be decrypted: check "
                                    f"{prefix}_KEYSTORE_PASSWORD.") from None
    raise SignerUnavailable(f"No {role} key: set {prefix}_KEY or {prefix}_KEYSTORE (+ {prefix}_KEYSTORE_PASSWORD).")


def reset_signer() -> None:
    _account.cache_clear()


def signer_address(role: str = "owner") -> str:
    return _account(role).address.lower()


def has_key(role: str) -> bool:
    """Whether a key for the role is configured at all (not whether it decrypts)."""
    prefix = ROLES[role]
    return bool(getattr(settings, f"{prefix}_KEY", "") or getattr(settings, f"{prefix}_KEYSTORE", ""))


@sensitive_variables()
def sign(*, chain_id: int, to: str, data: str, nonce: int, gas: int, max_fee: int, priority_fee: int,
         role: str = "owner") -> SignedTx:
    signed = _account(role).sign_transaction({
        "type": 2, "chainId": chain_id, "to": _checksum(to), "data": data, "value": 0, "nonce": nonce, "gas": gas,
        "maxFeePerGas": max_fee, "maxPriorityFeePerGas": priority_fee,
    })
    return SignedTx(raw="0x" + signed.raw_transaction.hex().removeprefix("0x"),
                    tx_hash="0x" + signed.hash.hex().removeprefix("0x"))


def _checksum(address: str) -> str:
    from eth_utils import to_checksum_address

    return to_checksum_address(address)


def simulate(chain: str, *, to: str, data: str, sender: str) -> Simulation:
    """eth_call (and gas estimate) of the call from the signer at the latest block."""
    client = get_client(chain)
    block = client.block_number()
    tx = {"from": sender, "to": to, "data": data}
    try:
        client.call("eth_call", [tx, hex(block)])
        gas = int(client.call("eth_estimateGas", [tx]), 16)
    except RpcError as exc:
        data_field = (exc.data if isinstance(exc.data, str) else
                      (exc.data or {}).get("data") if isinstance(exc.data, dict) else None)
        return Simulation(False, decode_revert(data_field, exc.message), None, block)
    return Simulation(True, "", gas, block)


def fee_quote(chain: str) -> tuple[int, int]:
    """(maxFeePerGas, maxPriorityFeePerGas): twice the latest base fee plus the node's suggested tip."""
    client = get_client(chain)
    latest = client.call("eth_getBlockByNumber", ["latest", False])
    base = int(latest.get("baseFeePerGas", "0x0"), 16)
    try:
        tip = int(client.call("eth_maxPriorityFeePerGas", []), 16)
    except RpcError:
        tip = 10**9
    tip = max(tip, 1)
    return 2 * base + tip, tip


def broadcast(chain: str, raw: str, tx_hash: str) -> str:
    """Send a signed transaction. Re-sending the same bytes is harmless: "already known" counts as sent."""
    client = get_client(chain)
    try:
        return client.call("eth_sendRawTransaction", [raw]).lower()
    except RpcError as exc:
        text = exc.message.lower()
        if "already known" in text or "known transaction" in text or "already imported" in text:
            return tx_hash
        if "nonce too low" in text and (tx_known(chain, tx_hash) or receipt(chain, tx_hash) is not None):
            return tx_hash
        raise


def tx_known(chain: str, tx_hash: str) -> bool:
    return get_client(chain).call("eth_getTransactionByHash", [tx_hash]) is not None


def receipt(chain: str, tx_hash: str) -> dict | None:
    result = get_client(chain).call("eth_getTransactionReceipt", [tx_hash])
    if result is None:
        return None
    return {"block": int(result["blockNumber"], 16), "status": int(result["status"], 16),
            "gas_used": int(result["gasUsed"], 16)}


def head(chain: str) -> int:
    return get_client(chain).block_number()


def chain_time(chain: str) -> int:
    """The latest block's timestamp: the clock a contract's `block.timestamp` deadlines are checked against."""
    return get_client(chain).latest_block()[1]


def escrow_paused(chain: str, escrow: str) -> bool:
    """The escrow's paused() at the latest block: while it is true every owner or keeper call on orders reverts."""
    selector = "0x5c975abb"  # paused()
    return int(get_client(chain).call("eth_call", [{"to": escrow, "data": selector}, "latest"]), 16) != 0


def nonce_of(chain: str, address: str, block: str = "pending") -> int:
    return int(get_client(chain).call("eth_getTransactionCount", [address, block]), 16)


def balance_of(chain: str, address: str) -> int:
    """Native-coin balance in wei (the relayer's and keeper's gas money)."""
    return int(get_client(chain).call("eth_getBalance", [address, "latest"]), 16)


def code_at(chain: str, address: str) -> str:
    return get_client(chain).call("eth_getCode", [address, "latest"])
