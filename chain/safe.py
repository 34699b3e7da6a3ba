"""Safe (v1.4.1) custody: SafeTx typed data and hashes, signature recovery, on-chain Safe and guardian reads.

Hand-written on eth_account's EIP-712 encoder rather than safe-eth-py: that package pulls in py-evm
and a C sha3 extension for what is, here, one typed-data hash, one signature format and six calls.
Every hash computed here is checked against the Safe's own `getTransactionHash` before it is fixed
(`confirm_safe_tx_hash`), so a divergence from the contract shows up at proposal, never at execution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account.messages import encode_defunct, encode_typed_data
from eth_keys import keys
from eth_utils import keccak, to_checksum_address

from .rpc import get_client

ZERO_ADDRESS = "0x" + "00" * 20
SAFE_TX_FIELDS = [
    {"name": "to", "type": "address"}, {"name": "value", "type": "uint256"}, {"name": "data", "type": "bytes"},
    {"name": "operation", "type": "uint8"}, {"name": "safeTxGas", "type": "uint256"},
    {"name": "baseGas", "type": "uint256"}, {"name": "gasPrice", "type": "uint256"},
    {"name": "gasToken", "type": "address"}, {"name": "refundReceiver", "type": "address"},
    {"name": "nonce", "type": "uint256"},
]
# Safe v1.4.1's storage: keccak256("guard_manager.guard.address") and keccak256("fallback_manager.handler.address");
# its module list is a linked list read from the sentinel.
GUARD_SLOT = "0x4a204f620c8c5ccdca3fd54d003badd85ba500436a431f0cbda4f558c93c34c8"
FALLBACK_HANDLER_SLOT = "0x6c9a6c4a39284e37ed1cf53d337577d14212a4870fb976a4366c693b939918d5"
SENTINEL = "0x0000000000000000000000000000000000000001"
MAX_MODULES_READ = 50
PAUSE_FIELDS = [{"name": "escrow", "type": "address"}, {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"}]


class BadSignature(ValueError):
    """A signature that is not 65 bytes of hex, or that recovers to no address."""


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def _hex(data: bytes) -> str:
    return "0x" + data.hex()


def _bytes(data: str) -> bytes:
    return bytes.fromhex(data.removeprefix("0x"))


# ---------------------------------------------------------------------------- typed data


def safe_tx_typed_data(*, chain_id: int, safe: str, to: str, data: str, nonce: int) -> dict[str, Any]:
    """The EIP-712 payload of a plain call (value 0, no refund) from the Safe, as eth_signTypedData_v4 takes it.

    Numbers are decimal strings so that wallets, `cast wallet sign --data` and eth_account read it alike.
    """
    return {
        "types": {"EIP712Domain": [{"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}],
                  "SafeTx": SAFE_TX_FIELDS},
        "primaryType": "SafeTx",
        "domain": {"chainId": str(chain_id), "verifyingContract": to_checksum_address(safe)},
        "message": {"to": to_checksum_address(to), "value": "0", "data": data, "operation": "0",
                    "safeTxGas": "0", "baseGas": "0", "gasPrice": "0", "gasToken": ZERO_ADDRESS,
                    "refundReceiver": ZERO_ADDRESS, "nonce": str(nonce)},
    }


def guardian_pause_typed_data(*, chain_id: int, module: str, escrow: str, nonce: int, deadline: int) -> dict[str, Any]:
    """The EIP-712 payload a guardian signs for PauseGuardianModule.pauseBySignature."""
    return {
        "types": {"EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                                   {"name": "chainId", "type": "uint256"},
                                   {"name": "verifyingContract", "type": "address"}],
                  "Pause": PAUSE_FIELDS},
        "primaryType": "Pause",
        "domain": {"name": "PauseGuardianModule", "version": "1", "chainId": str(chain_id),
                   "verifyingContract": to_checksum_address(module)},
        "message": {"escrow": to_checksum_address(escrow), "nonce": str(nonce), "deadline": str(deadline)},
    }


def _numeric(typed: dict[str, Any]) -> dict[str, Any]:
    """The same payload with uint fields as ints and bytes as bytes, for eth_account's encoder."""
    types = typed["types"]

    def convert(struct: str, values: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for item in types[struct]:
            value = values[item["name"]]
            if item["type"].startswith("uint"):
                value = int(value)
            elif item["type"] == "bytes":
                value = _bytes(value)
            out[item["name"]] = value
        return out

    return {"types": types, "primaryType": typed["primaryType"], "domain": convert("EIP712Domain", typed["domain"]),
            "message": convert(typed["primaryType"], typed["message"])}


def typed_data_hash(typed: dict[str, Any]) -> str:
    """keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)): what the signer signs."""
    signable = encode_typed_data(full_message=_numeric(typed))
    return _hex(keccak(b"\x19" + signable.version + signable.header + signable.body))


DOMAIN_TYPE = "EIP712Domain(uint256 chainId,address verifyingContract)"
SAFE_TX_TYPE = ("SafeTx(address to,uint256 value,bytes data,uint8 operation,uint256 safeTxGas,uint256 baseGas,"
                "uint256 gasPrice,address gasToken,address refundReceiver,uint256 nonce)")


@dataclass(frozen=True)
class SafeTxHashes:
    """The three hashes a signer compares: the domain separator (chain and Safe), the message hash (the SafeTx's
    fields) and the safeTxHash, keccak256(0x1901 ‖ domain ‖ message), which is what the owners sign."""
    domain_separator: str
    message_hash: str
    safe_tx_hash: str

    @staticmethod
    def device(value: str) -> str:
        """As a Ledger (and Safe's own safe_hashes tool) displays a hash for blind signing: 0x and upper-case hex."""
        return "0x" + value.removeprefix("0x").upper()

    def as_dict(self) -> dict[str, str]:
        return {"domain_separator": self.domain_separator, "message_hash": self.message_hash,
                "safe_tx_hash": self.safe_tx_hash, "domain_separator_device": self.device(self.domain_separator),
                "message_hash_device": self.device(self.message_hash)}


def safe_tx_hashes(typed: dict[str, Any]) -> SafeTxHashes:
    """Domain separator, message hash and safeTxHash of a SafeTx payload (`safe_tx_typed_data`)."""
    signable = encode_typed_data(full_message=_numeric(typed))
    return SafeTxHashes(domain_separator=_hex(signable.header), message_hash=_hex(signable.body),
                        safe_tx_hash=_hex(keccak(b"\x19" + signable.version + signable.header + signable.body)))


def safe_tx_cast_command(typed: dict[str, Any]) -> str:
    """One shell line with foundry's `cast` that recomputes the three hashes from the SafeTx's fields alone (Safe
    v1.4.1's EIP-712 encoding written out: no back-office code, no RPC), printing them in the page's order."""
    domain, m = typed["domain"], typed["message"]
    fields = " ".join(str(v) for v in (m["to"], m["value"])) + " $(cast keccak " + (m["data"] or "0x") + ") " + \
        " ".join(str(m[k]) for k in ("operation", "safeTxGas", "baseGas", "gasPrice", "gasToken", "refundReceiver",
                                      "nonce"))
    return (f"D=$(cast keccak $(cast abi-encode 'f(bytes32,uint256,address)' $(cast keccak '{DOMAIN_TYPE}') "
            f"{domain['chainId']} {domain['verifyingContract']})); "
            f"M=$(cast keccak $(cast abi-encode "
            f"'f(bytes32,address,uint256,bytes32,uint8,uint256,uint256,uint256,address,address,uint256)' "
            f"$(cast keccak '{SAFE_TX_TYPE}') {fields})); "
            # No double quote or backslash in the line: it stays copyable out of `contract_action show`'s JSON.
            "echo domain separator: $D; echo message hash: $M; "
            "echo safeTxHash: $(cast keccak $(cast concat-hex 0x1901 $D $M))")


# ---------------------------------------------------------------------------- signatures


SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


def normalize_signature(signature: str, *, typed_only: bool = False) -> bytes:
    """65 bytes r ‖ s ‖ v with v in 27/28 (EIP-712) or 31/32 (eth_sign, Safe's v+4 form). Wallets that return
    v as 0/1 are accepted and moved to 27/28.

    `typed_only` is for a contract that verifies with OpenZeppelin's ECDSA (PauseGuardianModule): it knows no
    eth_sign form and refuses a high s, so such a signature would only revert there."""
    text = (signature or "").strip()
    try:
        raw = _bytes(text)
    except ValueError:
        raise BadSignature("the signature is not hex: paste the 0x… value the wallet returned.") from None
    if len(raw) != 65:
        raise BadSignature(f"the signature has {len(raw)} bytes, not 65: paste the whole 0x… value (132 hex digits).")
    v = raw[64]
    if v in (0, 1):
        raw = raw[:64] + bytes([v + 27])
    elif v not in (27, 28, 31, 32):
        raise BadSignature(f"the signature's v byte is {v}: expected 27 or 28 (an EIP-712 signature).")
    if typed_only and v in (31, 32):
        raise BadSignature(f"the signature's v byte is {v}, an eth_sign (personal message) signature, which the "
                           "guardian module cannot verify: sign the typed data (eth_signTypedData_v4) instead.")
    if typed_only and int.from_bytes(raw[32:64], "big") > SECP256K1_HALF_N:
        raise BadSignature("the signature has a high s value, which the guardian module refuses: sign the typed "
                           "data (eth_signTypedData_v4) with a standard wallet, which gives a low s.")
    return raw


def recover_signer(digest: str, signature: bytes) -> str:
    """The address that made `signature` over `digest` (lower-case). For v 31/32 the digest was signed
    with the eth_sign prefix, as the Safe contract accepts it."""
    r, s, v = signature[:32], signature[32:64], signature[64]
    message_hash = _bytes(digest)
    if v > 30:
        signable = encode_defunct(primitive=message_hash)
        message_hash = keccak(b"\x19" + signable.version + signable.header + signable.body)
        v -= 4
    try:
        sig = keys.Signature(vrs=(v - 27, int.from_bytes(r, "big"), int.from_bytes(s, "big")))
        return sig.recover_public_key_from_msg_hash(message_hash).to_checksum_address().lower()
    except Exception:
        raise BadSignature("the signature does not recover to any address: it is malformed.") from None


def recover_personal_sign(message: str, signature: str) -> str:
    """The address that signed `message` with personal_sign / `cast wallet sign` (EIP-191)."""
    raw = normalize_signature(signature)
    if raw[64] > 30:
        raise BadSignature("a personal_sign signature has v 27 or 28.")
    signable = encode_defunct(text=message)
    digest = keccak(b"\x19" + signable.version + signable.header + signable.body)
    return recover_signer(_hex(digest), raw)


def pack_signatures(signatures: dict[str, bytes]) -> bytes:
    """Safe's `signatures` argument: 65-byte signatures ordered by owner address, ascending (the contract
    requires strictly increasing owners, which also forbids one owner counted twice)."""
    return b"".join(signatures[owner] for owner in sorted(signatures, key=lambda a: int(a, 16)))


# ---------------------------------------------------------------------------- calldata


def exec_transaction_calldata(*, to: str, data: str, signatures: bytes) -> str:
    types = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "bytes"]
    args = [to_checksum_address(to), 0, _bytes(data), 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, signatures]
    selector = _selector("execTransaction(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,bytes)")
    return _hex(selector + abi_encode(types, args))


def pause_by_signature_calldata(*, deadline: int, signature: bytes) -> str:
    return _hex(_selector("pauseBySignature(uint256,bytes)") + abi_encode(["uint256", "bytes"], [deadline, signature]))


def transfer_ownership_calldata(new_owner: str) -> str:
    return _hex(_selector("transferOwnership(address)") + abi_encode(["address"], [to_checksum_address(new_owner)]))


# ---------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class SafeState:
    address: str
    owners: tuple[str, ...]
    threshold: int
    nonce: int
    version: str
    block: int
    # What else can move the Safe's funds or block it: an enabled module executes with no owner signature,
    # a guard can veto every execTransaction, the fallback handler answers calls the Safe does not know.
    modules: tuple[str, ...] = ()
    guard: str = ZERO_ADDRESS
    fallback_handler: str = ZERO_ADDRESS


@dataclass(frozen=True)
class GuardianState:
    module: str
    guardians: tuple[str, ...]
    nonce: int
    enabled: bool


@dataclass
class Custody:
    """Who owns a chain's contracts, read from the chain: an EOA, or a Safe with its owners and threshold."""
    chain: str
    owner: str
    pool_owner: str
    is_safe: bool
    safe: SafeState | None = None
    guardian: GuardianState | None = None
    errors: list[str] = field(default_factory=list)


def _call(chain: str, to: str, signature: str, args: bytes = b"", block: str = "latest") -> bytes:
    return _bytes(get_client(chain).call("eth_call", [{"to": to, "data": _hex(_selector(signature) + args)}, block]))


def owner_of(chain: str, contract: str) -> str:
    return abi_decode(["address"], _call(chain, contract, "owner()"))[0].lower()


def has_code(chain: str, address: str) -> bool:
    return get_client(chain).call("eth_getCode", [address, "latest"]) not in ("0x", "0x0", "")


def read_safe(chain: str, safe: str) -> SafeState:
    """Owners, threshold, nonce, modules, guard and fallback handler at one block (one batched request)."""
    client = get_client(chain)
    block = hex(client.block_number())
    calls = [("eth_call", [{"to": safe, "data": _hex(_selector(sig))}, block])
             for sig in ("getOwners()", "getThreshold()", "nonce()", "VERSION()")]
    modules_page = _selector("getModulesPaginated(address,uint256)") + abi_encode(
        ["address", "uint256"], [SENTINEL, MAX_MODULES_READ])
    calls += [("eth_call", [{"to": safe, "data": _hex(modules_page)}, block]),
              ("eth_getStorageAt", [safe, GUARD_SLOT, block]),
              ("eth_getStorageAt", [safe, FALLBACK_HANDLER_SLOT, block])]
    owners, threshold, nonce, version, modules, guard, handler = (_bytes(r) for r in client.batch(calls))
    return SafeState(address=safe.lower(), owners=tuple(a.lower() for a in abi_decode(["address[]"], owners)[0]),
                     threshold=abi_decode(["uint256"], threshold)[0], nonce=abi_decode(["uint256"], nonce)[0],
                     version=abi_decode(["string"], version)[0], block=int(block, 16),
                     modules=tuple(m.lower() for m in abi_decode(["address[]", "address"], modules)[0]),
                     guard=_slot_address(guard), fallback_handler=_slot_address(handler))


def _slot_address(word: bytes) -> str:
    return "0x" + word.rjust(32, b"\0")[-20:].hex()


def confirm_safe_tx_hash(chain: str, safe: str, *, to: str, data: str, nonce: int) -> str:
    """The Safe's own getTransactionHash for the SafeTx (the contract is the authority on its hash)."""
    types = ["address", "uint256", "bytes", "uint8", "uint256", "uint256", "uint256", "address", "address", "uint256"]
    args = [to_checksum_address(to), 0, _bytes(data), 0, 0, 0, 0, ZERO_ADDRESS, ZERO_ADDRESS, nonce]
    raw = _call(chain, safe,
                "getTransactionHash(address,uint256,bytes,uint8,uint256,uint256,uint256,address,address,uint256)",
                abi_encode(types, args))
    return _hex(raw[:32])


def read_guardians(chain: str, module: str, safe: str) -> GuardianState:
    guardians = abi_decode(["address[]"], _call(chain, module, "guardians()"))[0]
    nonce = abi_decode(["uint256"], _call(chain, module, "nonce()"))[0]
    enabled = abi_decode(["bool"], _call(chain, safe, "isModuleEnabled(address)",
                                         abi_encode(["address"], [to_checksum_address(module)])))[0]
    return GuardianState(module=module.lower(), guardians=tuple(g.lower() for g in guardians), nonce=nonce,
                         enabled=enabled)


def pause_digest(chain: str, module: str, deadline: int) -> str:
    """The module's own EIP-712 digest of a pause with the current module nonce."""
    return _hex(_call(chain, module, "pauseDigest(uint256)", abi_encode(["uint256"], [deadline]))[:32])


def read_custody(chain: str, *, escrow: str, pool: str, guardian_module: str = "",
                 known_modules: tuple[str, ...] = ()) -> Custody:
    """The owner of both contracts and, when it is a Safe, its state and the guardian module's."""
    owner, pool_owner = owner_of(chain, escrow), owner_of(chain, pool)
    custody = Custody(chain=chain, owner=owner, pool_owner=pool_owner, is_safe=has_code(chain, owner))
    if owner != pool_owner:
        custody.errors.append(f"the escrow's owner {owner} differs from the arbitrator pool's {pool_owner}")
    if custody.is_safe:
        custody.safe = read_safe(chain, owner)
        if guardian_module:
            custody.guardian = read_guardians(chain, guardian_module, owner)
            if not custody.guardian.enabled:
                custody.errors.append(f"the guardian module {guardian_module.lower()} is not enabled on the Safe "
                                      f"{owner}: an emergency pause needs the Safe's threshold. Enable it (a SafeTx "
                                      "enableModule)")
        custody.errors += safe_problems(custody.safe, guardian_module, known_modules)
    return custody


def safe_problems(safe: SafeState, guardian_module: str = "", known: tuple[str, ...] = ()) -> list[str]:
    """What undoes four eyes on chain: a threshold of one; and what the back office did not set up and the owners
    did not declare (`known`: <CHAIN>_SAFE_KNOWN_MODULES): a module other than the guardian (it executes
    anything, with no owner signature), a transaction guard (it can veto every execution)."""
    problems = []
    if safe.threshold < 2:
        problems.append(f"the Safe {safe.address} needs {safe.threshold} signature of {len(safe.owners)}: one owner "
                        "acts alone. Raise the threshold to 2 or more (a SafeTx changeThreshold)")
    unknown = [m for m in safe.modules if m != guardian_module.lower() and m not in known]
    if unknown:
        problems.append(f"the Safe {safe.address} has module(s) {', '.join(unknown)} enabled that the back office "
                        "does not know: a module moves the Safe's funds and calls the escrow with no owner signature. "
                        "Disable it (Safe disableModule) now, unless every owner knows it: then list it in "
                        "<CHAIN>_SAFE_KNOWN_MODULES")
    if len(safe.modules) >= MAX_MODULES_READ:
        problems.append(f"the Safe {safe.address} has {MAX_MODULES_READ} or more modules enabled: only the first "
                        f"{MAX_MODULES_READ} were read")
    if safe.guard != ZERO_ADDRESS and safe.guard not in known:
        problems.append(f"a transaction guard {safe.guard} is set on the Safe {safe.address}: every execTransaction "
                        "passes through it and it can refuse them all. Remove it (Safe setGuard to the zero address), "
                        "unless every owner knows it: then list it in <CHAIN>_SAFE_KNOWN_MODULES")
    return problems
