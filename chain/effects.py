"""What an owner call changes: the escrow's and the pool's owner-set getters, token balances of the escrow, the
treasury and the order's parties, and the events it emits, decoded with their names. Measured on an anvil fork of the
chain at its head before anyone signs (the call made as it will run), and read back from the chain after it executed,
with the same reads, so the two compare field by field.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

from .config import get_chain_config
from .deploy import load_artifact
from .fork import ForkUnavailable, forked
from .models import Token
from .rpc import ProviderUnavailable, RpcClient, RpcError, get_client

# Safe v1.4.1's storage: singleton 0, modules 1, owners 2, ownerCount 3, threshold 4, nonce 5.
SAFE_THRESHOLD_SLOT = "0x" + "00" * 31 + "04"
ZERO = "0x" + "00" * 20
# The escrow's owner-set getters, in the order shown; `owner` of both contracts for the ownership transfers.
ESCROW_GETTERS = (("paused", "bool"), ("treasury", "address"), ("platformFeeBps", "uint16"),
                  ("arbitratorFeeBps", "uint16"), ("sellerTimeout", "uint64"), ("buyerTimeout", "uint64"),
                  ("disputeTimeout", "uint64"), ("arbitratorPool", "address"), ("owner", "address"))
ORDER_STATUS = ("none", "funded", "delivered", "completed", "disputed", "resolved_buyer", "resolved_seller",
                "cancelled", "expired")
ORDER_TYPES = ["address", "address", "address", "uint256", "uint256", "address", "uint64", "uint64", "uint64",
               "uint64", "uint8"]


class EffectsUnavailable(Exception):
    """The state changes could not be measured: the fork did not start, or the node did not answer."""


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def _call_data(signature: str, types: list[str] | None = None, args: list | None = None) -> str:
    return "0x" + (_selector(signature) + (abi_encode(types, args) if types else b"")).hex()


@dataclass
class Watch:
    """What to read before and after: the contracts, the tokens (address → symbol, decimals) and named holders.
    `supported`: a token the call itself names that is not a configured one (being added, or known only from
    orders): its `supportedTokens` getter is read under its address, a label that stays the same from proposal to
    verification although the token may meanwhile appear among `tokens` (the sync records it at its first order)."""
    escrow: str
    pool: str
    tokens: dict[str, tuple[str, int]]
    order_id: int | None = None
    holders: dict[str, str] = field(default_factory=dict)  # label → address
    supported: tuple[str, ...] = ()


@dataclass
class ForkCall:
    """The transaction to run on the fork. `safe`: first make the call pass the Safe's threshold as it will with
    the owners' signatures (threshold 1 written into the Safe's storage, and `sender`, an owner, pre-validates
    with its own address: Safe's v=1 signature), then send `data` (an execTransaction) from that owner."""
    sender: str
    to: str
    data: str
    safe: str = ""


# ---------------------------------------------------------------------------- events


@lru_cache(maxsize=1)
def _event_abis() -> dict[str, tuple[str, dict]]:
    """topic0 → (contract label, event ABI) for every contract an owner call touches."""
    out: dict[str, tuple[str, dict]] = {}
    for label, artifact in (("token", "TestToken"), ("Safe", "Safe"), ("guardian module", "PauseGuardianModule"),
                            ("pool", "ArbitratorPool"), ("escrow", "P2PEscrow")):
        for item in load_artifact(artifact)["abi"]:
            if item.get("type") == "event":
                sig = f"{item['name']}({','.join(i['type'] for i in item['inputs'])})"
                out["0x" + keccak(text=sig).hex()] = (label, item)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return value.lower()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return str(value)  # JSON numbers lose precision past 2**53
    return value


def decode_logs(logs: list[dict], names: dict[str, str]) -> list[dict]:
    """Receipt logs as {contract, address, event, args}; `names` labels known addresses (escrow, pool, a token's
    symbol). An unknown event keeps its topics."""
    out = []
    for log in logs:
        address = log["address"].lower()
        topics = log.get("topics") or []
        known = _event_abis().get(topics[0].lower()) if topics else None
        entry: dict[str, Any] = {"address": address, "contract": names.get(address, known[0] if known else "?")}
        if known is None:
            entry.update(event="(unknown)", args={"topics": topics, "data": log.get("data", "0x")})
        else:
            abi = known[1]
            indexed = [i for i in abi["inputs"] if i["indexed"]]
            plain = [i for i in abi["inputs"] if not i["indexed"]]
            args = {}
            try:
                for item, topic in zip(indexed, topics[1:], strict=True):
                    args[item["name"]] = _plain(abi_decode([item["type"]], bytes.fromhex(topic[2:]))[0])
                values = abi_decode([i["type"] for i in plain], bytes.fromhex(log.get("data", "0x")[2:]))
                args.update({i["name"]: _plain(v) for i, v in zip(plain, values, strict=True)})
            except Exception:  # a log of another contract with the same topic but other indexing
                entry.update(event=abi["name"] + " (undecodable)", args={"topics": topics, "data": log.get("data")})
            else:
                entry.update(event=abi["name"], args=args)
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- reads


def read_state(client: RpcClient, watch: Watch, block: int) -> dict[str, Any]:
    """The watched getters and balances at `block`, in one batched request. Keys are stable labels:
    `escrow.treasury`, `pool.owner`, `supported USDT`, `order 7 status`, `USDT of treasury (0x…)`."""
    at = hex(block)
    calls: list[tuple[str, tuple]] = []
    labels: list[tuple[str, str]] = []
    for name, typ in ESCROW_GETTERS:
        calls.append(("eth_call", ({"to": watch.escrow, "data": _call_data(f"{name}()")}, at)))
        labels.append((f"escrow.{name}", typ))
    calls.append(("eth_call", ({"to": watch.pool, "data": _call_data("owner()")}, at)))
    labels.append(("pool.owner", "address"))
    # The call's own token under its address (see Watch.supported), every other one under its symbol.
    named = [(a, symbol) for a, (symbol, _d) in watch.tokens.items() if a not in watch.supported]
    for address, name in named + [(a, a) for a in watch.supported]:
        calls.append(("eth_call", ({"to": watch.escrow, "data": _call_data("supportedTokens(address)", ["address"],
                                                                            [to_checksum_address(address)])}, at)))
        labels.append((f"supported {name}", "bool"))
    if watch.order_id is not None:
        calls.append(("eth_call", ({"to": watch.escrow, "data": _call_data("orders(uint256)", ["uint256"],
                                                                            [watch.order_id])}, at)))
        labels.append((f"order {watch.order_id}", "order"))
    answers = client.batch([(m, list(p)) for m, p in calls])
    state: dict[str, Any] = {}
    for (label, typ), raw in zip(labels, answers, strict=True):
        data = bytes.fromhex(raw[2:]) if raw not in ("0x", "", None) else b""
        if typ == "order":
            if data:
                order = abi_decode(ORDER_TYPES, data)
                state[f"{label} status"] = ORDER_STATUS[order[10]] if order[10] < len(ORDER_STATUS) else order[10]
        elif data:
            state[label] = _plain(abi_decode([typ], data)[0])
    return state


def read_balances(client: RpcClient, watch: Watch, holders: dict[str, str], block: int) -> dict[str, int]:
    """`<symbol> of <label>` → raw token units, for every watched token and holder, at `block`."""
    keys, calls = [], []
    for address, (symbol, _decimals) in watch.tokens.items():
        for label, holder in holders.items():
            keys.append(f"{symbol} of {label}")
            calls.append(("eth_call", [{"to": address, "data": _call_data("balanceOf(address)", ["address"],
                                                                          [to_checksum_address(holder)])}, hex(block)]))
    answers = client.batch(calls) if calls else []
    return {k: int(a, 16) if a not in ("0x", "", None) else 0 for k, a in zip(keys, answers, strict=True)}


def order_parties(client: RpcClient, watch: Watch, block: int) -> dict[str, str]:
    """buyer, seller and arbitrator of the watched order (the holders an owner resolution pays)."""
    if watch.order_id is None:
        return {}
    raw = client.call("eth_call", [{"to": watch.escrow, "data": _call_data("orders(uint256)", ["uint256"],
                                                                        [watch.order_id])}, hex(block)])
    order = abi_decode(ORDER_TYPES, bytes.fromhex(raw[2:]))
    parties = {"buyer": order[0].lower(), "seller": order[1].lower(), "arbitrator": order[5].lower()}
    return {k: v for k, v in parties.items() if v != ZERO}


def holders_of(client: RpcClient, watch: Watch, before: dict, after: dict, block: int) -> dict[str, str]:
    """escrow, treasury (old and new when it changes), the order's parties, and any extra holder given."""
    holders = {"escrow": watch.escrow.lower(), "treasury": before.get("escrow.treasury", ZERO)}
    if after.get("escrow.treasury") and after["escrow.treasury"] != holders["treasury"]:
        holders["new treasury"] = after["escrow.treasury"]
    holders.update(order_parties(client, watch, block))
    holders.update(watch.holders)
    return {label: address for label, address in holders.items() if address and address != ZERO}


def compare(before: dict, after: dict) -> list[dict]:
    """The values that changed, as {name, before, after}, in the order read."""
    return [{"name": k, "before": before.get(k), "after": after.get(k)} for k in {**before, **after}
            if before.get(k) != after.get(k)]


def balance_changes(watch: Watch, before: dict[str, int], after: dict[str, int],
                    others: dict[str, int] | None = None) -> list[dict]:
    """The balances the transaction changed: `delta` is its own (the block's change less `others`, what the other
    transactions of its block moved by their Transfer events); before and after are the block's reads."""
    decimals = {symbol: d for symbol, d in watch.tokens.values()}
    others = others or {}
    out = []
    for key in before:
        delta = after.get(key, 0) - before[key] - others.get(key, 0)
        if delta:
            symbol = key.split(" of ", 1)[0]
            row = {"name": key, "before": str(before[key]), "after": str(after[key]), "delta": str(delta),
                   "decimals": decimals.get(symbol, 18)}
            if others.get(key):
                row["others_delta"] = str(others[key])
            out.append(row)
    return out


TRANSFER = "0x" + keccak(text="Transfer(address,address,uint256)").hex()


def others_in_block(client: RpcClient, watch: Watch, holders: dict[str, str], *, block: int,
                    tx_hash: str) -> dict[str, int]:
    """`<symbol> of <label>` → what the other transactions of `block` moved by their ERC-20 Transfer events: on a
    busy chain a trade in the same block moves the escrow's balance, which is not the owner call's doing. A balance
    that moved without an event stays in the call's own change (and so shows when it was not simulated)."""
    if not watch.tokens or not holders:
        return {}
    logs = client.call("eth_getLogs", [{"fromBlock": hex(block), "toBlock": hex(block), "topics": [TRANSFER],
                                        "address": [to_checksum_address(a) for a in watch.tokens]}])
    labels_of: dict[str, list[str]] = {}
    for label, address in holders.items():  # one address may hold two roles (the treasury buying, say)
        labels_of.setdefault(address.lower(), []).append(label)
    moved: dict[str, int] = {}
    for log in logs:
        topics = log.get("topics") or []
        if log.get("transactionHash", "").lower() == tx_hash.lower() or len(topics) != 3:
            continue
        symbol = watch.tokens[log["address"].lower()][0]
        value = int(log["data"], 16) if log.get("data") not in (None, "0x", "") else 0
        for topic, sign in ((topics[1], -1), (topics[2], 1)):
            for label in labels_of.get("0x" + topic[-40:].lower(), []):
                key = f"{symbol} of {label}"
                moved[key] = moved.get(key, 0) + sign * value
    return moved


def measure(client: RpcClient, watch: Watch, *, before_block: int, after_block: int, logs: list[dict],
            names: dict[str, str], tx_hash: str | None = None) -> dict[str, Any]:
    """Getters, balances and events between two blocks of one node: what a transaction mined in `after_block`
    changed (the fork's own, or the chain's after execution: then `tx_hash` names it, and what the other
    transactions of its block moved is set apart from its balance changes)."""
    before, after = read_state(client, watch, before_block), read_state(client, watch, after_block)
    holders = holders_of(client, watch, before, after, before_block)
    others = others_in_block(client, watch, holders, block=after_block, tx_hash=tx_hash) if tx_hash else None
    balances = balance_changes(watch, read_balances(client, watch, holders, before_block),
                               read_balances(client, watch, holders, after_block), others)
    return {"events": decode_logs(logs, names), "state": compare(before, after), "balances": balances,
            "holders": holders}


# ---------------------------------------------------------------------------- the fork


def _send_on_fork(client: RpcClient, call: ForkCall) -> dict:
    sender = to_checksum_address(call.sender)
    if call.safe:
        client.call("anvil_setStorageAt", [call.safe, SAFE_THRESHOLD_SLOT, "0x" + "00" * 31 + "01"])
    client.call("anvil_impersonateAccount", [sender])
    client.call("anvil_setBalance", [sender, hex(10**21)])
    tx_hash = client.call("eth_sendTransaction", [{"from": sender, "to": to_checksum_address(call.to),
                                                   "data": call.data, "gas": hex(5_000_000)}])
    for _ in range(200):
        receipt = client.call("eth_getTransactionReceipt", [tx_hash])
        if receipt:
            return receipt
        time.sleep(0.02)
    raise EffectsUnavailable("the fork did not mine the simulated transaction")


def simulate_on_fork(chain: str, *, rpc_url: str, block: int, call: ForkCall, watch: Watch,
                     names: dict[str, str]) -> dict[str, Any]:
    """Run `call` on an anvil fork of `rpc_url` at `block` and measure what it changed. The result is JSON:
    {method: "fork", ok, reason, block, gas, events, state, balances, holders, seconds}. Raises EffectsUnavailable
    (naming why) when the fork cannot start or answer; a reverted call is `ok: False` with its reason."""
    started = time.monotonic()
    try:
        with forked(chain, rpc_url=rpc_url, block=block) as client:
            receipt = _send_on_fork(client, call)
            mined = int(receipt["blockNumber"], 16)
            ok = int(receipt.get("status", "0x0"), 16) == 1
            result: dict[str, Any] = {"method": "fork", "ok": ok, "reason": "", "block": block,
                                      "gas": int(receipt.get("gasUsed", "0x0"), 16)}
            if call.safe and ok and any(e["event"] == "ExecutionFailure"
                                        for e in decode_logs(receipt.get("logs", []), names)):
                result.update(ok=False, reason="the Safe's inner call failed (ExecutionFailure)")
            if not ok:
                result["reason"] = "the call reverts on the fork"
                result.update(events=[], state=[], balances=[], holders={})
            else:
                result.update(measure(client, watch, before_block=mined - 1, after_block=mined,
                                      logs=receipt.get("logs", []), names=names))
    except ForkUnavailable as exc:
        raise EffectsUnavailable(str(exc)) from None
    except (ProviderUnavailable, RpcError) as exc:
        raise EffectsUnavailable(f"the fork of {chain} did not answer: {exc}") from None
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def observed_effects(client: RpcClient, *, receipt: dict, watch: Watch, names: dict[str, str]) -> dict[str, Any]:
    """What an executed transaction changed on the chain itself: its receipt's events, and the same getters and
    balances read at the block before it and at its block (independent eth_calls), less what the other
    transactions of its block moved by their Transfer events."""
    mined = int(receipt["blockNumber"], 16) if isinstance(receipt["blockNumber"], str) else receipt["blockNumber"]
    return {"method": "chain", "ok": True, "block": mined,
            **measure(client, watch, before_block=mined - 1, after_block=mined, logs=receipt.get("logs", []),
                      names=names, tx_hash=receipt["transactionHash"])}


# ---------------------------------------------------------------------------- comparing


def _event_key(event: dict) -> str:
    return f"{event.get('contract')} {event.get('event')} {sorted((event.get('args') or {}).items())}"


def differences(expected: dict[str, Any] | None, actual: dict[str, Any] | None) -> list[str]:
    """What differs between two measurements of the same call, one line each: an event emitted by one only, a
    getter or a balance with another value. Empty when they agree (or when either has nothing to compare)."""
    if not expected or not actual or expected.get("method") == "eth_call" or actual.get("method") == "eth_call":
        return []
    out = []
    if expected.get("ok") != actual.get("ok"):
        out.append(f"outcome: {'passes' if expected.get('ok') else 'reverts'} → "
                   f"{'passes' if actual.get('ok') else 'reverts'}")
    exp_events = [_event_key(e) for e in expected.get("events") or []]
    act_events = [_event_key(e) for e in actual.get("events") or []]
    for key in exp_events:
        if key in act_events:
            act_events.remove(key)
        else:
            out.append(f"event missing: {key}")
    out += [f"event extra: {key}" for key in act_events]
    exp = {row["name"]: row for row in expected.get("state") or []}
    act = {row["name"]: row for row in actual.get("state") or []}
    for name in {**exp, **act}:
        a, b = exp.get(name), act.get(name)
        if a is None:
            out.append(f"value {name}: unchanged → {b['before']} → {b['after']}")
        elif b is None:
            out.append(f"value {name}: {a['before']} → {a['after']} → unchanged")
        elif (a["before"], a["after"]) != (b["before"], b["after"]):
            out.append(f"value {name}: {a['before']} → {a['after']}, now {b['before']} → {b['after']}")
    # A balance is the call's own change: the trades of other blocks (or of its own, set apart on chain) move the
    # holders' balances before and after it, not what the call does to them.
    exp = {row["name"]: int(row["delta"]) for row in expected.get("balances") or []}
    act = {row["name"]: int(row["delta"]) for row in actual.get("balances") or []}
    for name in {**exp, **act}:
        if exp.get(name, 0) != act.get(name, 0):
            out.append(f"balance {name}: changed by {exp.get(name, 0)}, now by {act.get(name, 0)}")
    return out


def watch_for(chain: str, *, order_id: int | None = None, token: str | None = None) -> tuple[Watch, dict[str, str]]:
    """The reads for one chain's owner calls, and the labels of its addresses (for decoding events). `token`: the
    token a call sets as supported or not, read under its address unless it is a configured one (see Watch)."""
    cfg = get_chain_config(chain)
    tokens = {t.address.lower(): (t.symbol, t.decimals) for t in Token.objects.filter(chain=chain)}
    for symbol, address in cfg.tokens.items():
        tokens.setdefault(address.lower(), (symbol, 18))
    configured = {address.lower() for address in cfg.tokens.values()}
    extra = (token.lower(),) if token and token.lower() not in configured else ()
    watch = Watch(escrow=cfg.escrow.lower(), pool=cfg.arbitrator_pool.lower(), tokens=tokens, order_id=order_id,
                  supported=extra)
    names = {cfg.escrow.lower(): "escrow", cfg.arbitrator_pool.lower(): "pool",
             **{address: symbol for address, (symbol, _d) in tokens.items()}}
    if cfg.guardian_module:
        names[cfg.guardian_module.lower()] = "guardian module"
    return watch, names


def observed_for_tx(chain: str, tx_hash: str, *, order_id: int | None = None, token: str | None = None,
                    extra_names: dict[str, str] | None = None) -> dict[str, Any]:
    """What the mined transaction `tx_hash` changed on `chain` (its receipt's events; the getters and balances at
    its block against the block before), for comparing with the simulation recorded before it was sent."""
    client = get_client(chain)
    receipt = client.call("eth_getTransactionReceipt", [tx_hash])
    if receipt is None:
        raise EffectsUnavailable(f"no receipt for {tx_hash} on {chain}")
    watch, names = watch_for(chain, order_id=order_id, token=token)
    names.update(extra_names or {})
    return observed_effects(client, receipt=receipt, watch=watch, names=names)
