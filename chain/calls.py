"""The escrow's owner actions as data: what each is, its parameters, its calldata and its revert reasons.

Staff choose an action and give parameters; this module validates them (errors name the field),
encodes the calldata once at proposal, and decodes it and any revert back into words.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.core.exceptions import ValidationError
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak

from .addresses import canonical_wallet, checksum
from .deploy import load_artifact

UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class Param:
    name: str
    abi_type: str  # address, bool, uint256, uint16, uint64
    label: str
    help: str = ""
    # The contract's own limits (P2PEscrow.sol), checked here so a bad value is a field error naming the fix
    # rather than a reverted simulation: the smallest and largest number, and whether the zero address is refused.
    low: int = 0
    high: int | None = None
    nonzero: bool = False


@dataclass(frozen=True)
class ActionKind:
    key: str
    function: str  # Solidity name
    params: tuple[Param, ...]
    label: str
    description: str
    irreversible: bool = True
    contract: str = "escrow"  # or "pool": the ArbitratorPool; "safe": the owning Safe itself (no function)

    @property
    def signature(self) -> str:
        return f"{self.function}({','.join(p.abi_type for p in self.params)})"

    @property
    def selector(self) -> bytes:
        return keccak(text=self.signature)[:4]


ORDER_ID = Param("order_id", "uint256", "order id", "The on-chain order id (the number after # in the admin).")
KINDS: dict[str, ActionKind] = {k.key: k for k in (
    ActionKind("pause", "pause", (), "Pause the escrow",
               "RB-05: blocks all trading. One operator may execute it at once (still simulated and audited)."),
    ActionKind("unpause", "unpause", (), "Unpause the escrow", "RB-05 step 7: resumes trading. Always needs a "
               "second person's approval."),
    ActionKind("set_supported_token", "setSupportedToken",
               (Param("token", "address", "token", "ERC-20 contract address."),
                Param("supported", "bool", "supported", "true to accept the token in new orders, false to stop.")),
               "Add or remove a supported token", "Runbook §8: setSupportedToken(address,bool)."),
    ActionKind("set_treasury", "setTreasury", (Param("treasury", "address", "new treasury", "Should be a multisig.",
                                                     nonzero=True),),
               "Change the treasury", "Runbook §8: where platform fees go from now on."),
    ActionKind("set_platform_fee", "setPlatformFeeBps",
               (Param("bps", "uint16", "fee (basis points)", "100 = 1%. At most 1000 (10%).", high=1000),),
               "Change the platform fee", "Applies to orders created after it is confirmed."),
    ActionKind("set_arbitrator_fee", "setArbitratorFeeBps",
               (Param("bps", "uint16", "arbitrator share (basis points of the fee)",
                      "5000 = half the fee. At most 10000.", high=10_000),),
               "Change the arbitrator's share of the fee", "Applies to disputes resolved after it is confirmed."),
    ActionKind("set_timeouts", "setTimeouts",
               (Param("seller_timeout", "uint64", "seller timeout (s)", low=1), Param("buyer_timeout", "uint64",
                "buyer timeout (s)", low=1), Param("dispute_timeout", "uint64", "dispute timeout (s)", low=1)),
               "Change the order timeouts", "Applies to deadlines set after it is confirmed."),
    ActionKind("auto_expire", "autoExpireOrder", (ORDER_ID,), "Auto-expire an order (refund the buyer)",
               "Runbook §8: the seller missed the delivery deadline."),
    ActionKind("auto_release", "autoReleaseToSeller", (ORDER_ID,), "Auto-release an order to the seller",
               "Runbook §8: the buyer missed the confirmation deadline."),
    ActionKind("owner_resolve", "ownerResolveDispute",
               (ORDER_ID, Param("favor_buyer", "bool", "favor buyer",
                                "true refunds the buyer, false pays the seller.")),
               "Resolve a dispute as owner", "The fallback when the arbitrator missed the dispute deadline."),
    ActionKind("transfer_ownership", "transferOwnership",
               (Param("new_owner", "address", "new owner", "The Safe that will own the escrow (README: moving to a "
                      "Safe). Check the address twice: a wrong one loses the contract.", nonzero=True),),
               "Transfer the escrow's ownership", "Moves every owner power of the escrow to the new owner."),
    ActionKind("transfer_pool_ownership", "transferOwnership",
               (Param("new_owner", "address", "new owner", "The same Safe as the escrow's owner.", nonzero=True),),
               "Transfer the arbitrator pool's ownership", "Moves every owner power of the pool to the new owner.",
               contract="pool"),
    # The Safe's own "reject transaction": a SafeTx to the Safe with no data and no value. It does nothing but
    # use its nonce, so a rejected SafeTx waiting on that nonce can never execute, whoever holds its signatures.
    ActionKind("cancel_safe_tx", "", (), "Cancel a SafeTx on chain", "Uses up the Safe nonce of a rejected SafeTx "
               "with a transaction that does nothing.", irreversible=False, contract="safe"),
)}
# What staff may choose on the propose page: a cancel is proposed from the rejected action it cancels.
PROPOSABLE = {key: spec for key, spec in KINDS.items() if spec.contract != "safe"}


def _clean(param: Param, raw: Any) -> Any:
    field = param.name
    if param.abi_type == "address":
        wallet = canonical_wallet(str(raw) if raw is not None else "", field=field)
        if param.nonzero and int(wallet, 16) == 0:
            raise ValidationError({field: f"{param.label} cannot be the zero address (the contract refuses it): "
                                          "paste the real address."})
        return wallet
    if param.abi_type == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValidationError({field: f"{param.label} must be true or false."})
    bits = int(param.abi_type[4:])
    try:
        value = int(str(raw).strip()) if not isinstance(raw, int) or isinstance(raw, bool) else raw
    except (TypeError, ValueError):
        raise ValidationError({field: f"{param.label} must be a whole number."}) from None
    high = 2**bits - 1 if param.high is None else param.high
    if value < param.low or value > high:
        raise ValidationError({field: f"{param.label} must be between {param.low} and {high}"
                                      f"{' (the contract refuses more)' if param.high is not None else ''}."})
    return value


def clean_params(kind: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Validate and normalise an action's parameters; ValidationError names each bad field."""
    if kind not in KINDS:
        raise ValidationError({"kind": f"Unknown action {kind!r}: use one of {', '.join(KINDS)}."})
    spec = KINDS[kind]
    unknown = set(raw) - {p.name for p in spec.params}
    if unknown:
        raise ValidationError({"params": f"{spec.label} takes no parameter(s) {', '.join(sorted(unknown))}."})
    errors: dict[str, list[str]] = {}
    cleaned = {}
    for param in spec.params:
        if param.name not in raw or raw[param.name] in (None, ""):
            errors[param.name] = [f"{param.label} is required."]
            continue
        try:
            cleaned[param.name] = _clean(param, raw[param.name])
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return cleaned


def encode(kind: str, params: dict[str, Any]) -> str:
    spec = KINDS[kind]
    if not spec.function:  # a call with no data (the Safe's cancel)
        return "0x"
    args = [params[p.name] for p in spec.params]
    body = abi_encode([p.abi_type for p in spec.params], args) if spec.params else b""
    return "0x" + (spec.selector + body).hex()


def describe(kind: str, params: dict[str, Any]) -> str:
    """The decoded call, as staff read it: setTreasury(treasury=0xAbC…)."""
    spec = KINDS[kind]
    if not spec.function:
        return "no call: uses up the Safe nonce (cancels the SafeTx waiting on it)"
    parts = []
    for p in spec.params:
        value = params.get(p.name)
        shown = checksum(value) if p.abi_type == "address" else str(value).lower() if isinstance(value, bool) else value
        parts.append(f"{p.name}={shown}")
    return f"{spec.function}({', '.join(parts)})"


def decode_calldata(data: str, contract: str = "escrow") -> tuple[str, dict[str, Any]]:
    """(kind, params) of calldata produced by `encode` for `contract` (escrow or pool: both have
    transferOwnership); ValueError for anything else."""
    raw = bytes.fromhex(data[2:] if data.startswith("0x") else data)
    for spec in KINDS.values():
        if raw[:4] == spec.selector and spec.contract == contract:
            values = abi_decode([p.abi_type for p in spec.params], raw[4:]) if spec.params else ()
            return spec.key, {p.name: (v.lower() if isinstance(v, str) else v)
                              for p, v in zip(spec.params, values, strict=True)}
    raise ValueError("calldata does not match any known action")


@lru_cache(maxsize=1)
def _errors() -> dict[bytes, tuple[str, list[str]]]:
    table = {}
    for name in ("P2PEscrow", "ArbitratorPool", "TestToken", "PauseGuardianModule"):
        for item in load_artifact(name)["abi"]:
            if item["type"] == "error":
                types = [i["type"] for i in item["inputs"]]
                table[keccak(text=f"{item['name']}({','.join(types)})")[:4]] = (item["name"], types)
    return table


def decode_revert(data: str | None, message: str = "") -> str:
    """Words for a revert: Error(string), Panic(uint256) or one of the contracts' custom errors."""
    if not data or not isinstance(data, str) or len(data) < 10:
        return message or "reverted without a reason"
    raw = bytes.fromhex(data[2:])
    selector, body = raw[:4], raw[4:]
    try:
        if selector == keccak(text="Error(string)")[:4]:
            return abi_decode(["string"], body)[0]
        if selector == keccak(text="Panic(uint256)")[:4]:
            return f"Panic(0x{abi_decode(['uint256'], body)[0]:x})"
        if selector in _errors():
            name, types = _errors()[selector]
            values = abi_decode(types, body) if types else ()
            return f"{name}({', '.join(str(v) for v in values)})"
    except Exception:  # undecodable body: fall through to the raw selector
        pass
    return f"custom error 0x{selector.hex()}"
