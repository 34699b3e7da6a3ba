"""Decoding the escrow's and arbitrator pool's logs straight from eth_getLogs JSON.

Built from the committed ABIs. The hot path decodes the ABI words itself (every event here has
static fields plus at most one string), because web3's per-log formatters run at a fraction of
the speed the sync needs (DEVELOPERS.md, facts); `tests/chain/test_events.py` checks it against
eth_abi. Anything that does not match its ABI exactly raises `DecodeError`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from eth_utils import keccak

from .deploy import load_artifact

CONTRACTS = {"escrow": "P2PEscrow", "pool": "ArbitratorPool"}


class DecodeError(ValueError):
    pass


@dataclass(frozen=True)
class EventSpec:
    contract: str
    name: str
    signature: str
    topic0: str
    indexed: tuple[tuple[str, str], ...]
    body: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Log:
    """One fetched log, decoded or not."""

    block_number: int
    block_hash: str
    block_time: int | None
    tx_hash: str
    log_index: int
    address: str
    contract: str
    name: str
    args: dict
    error: str = ""


def _specs_for(contract: str) -> list[EventSpec]:
    out = []
    for item in load_artifact(CONTRACTS[contract])["abi"]:
        if item["type"] != "event":
            continue
        types = ",".join(i["type"] for i in item["inputs"])
        signature = f"{item['name']}({types})"
        out.append(EventSpec(
            contract=contract, name=item["name"], signature=signature,
            topic0="0x" + keccak(text=signature).hex(),
            indexed=tuple((i["name"], i["type"]) for i in item["inputs"] if i["indexed"]),
            body=tuple((i["name"], i["type"]) for i in item["inputs"] if not i["indexed"]),
        ))
    return out


@lru_cache(maxsize=1)
def specs() -> dict[tuple[str, str], EventSpec]:
    """{(contract, topic0): spec}."""
    return {(s.contract, s.topic0): s for c in CONTRACTS for s in _specs_for(c)}


def _word(value_hex: str, typ: str, what: str):
    """Decode one 32-byte word (64 hex chars) of a static ABI type."""
    if typ == "address":
        if value_hex[:24] != "0" * 24:
            raise DecodeError(f"{what}: address word has non-zero high bytes")
        return "0x" + value_hex[24:]
    if typ == "bool":
        if value_hex[:63] != "0" * 63 or value_hex[63] not in "01":
            raise DecodeError(f"{what}: bool word is not 0 or 1")
        return value_hex[63] == "1"
    if typ.startswith("uint"):
        value = int(value_hex, 16)
        bits = int(typ[4:] or 256)
        if value >> bits:
            raise DecodeError(f"{what}: value does not fit {typ}")
        return value
    if typ == "bytes32":
        return "0x" + value_hex
    raise DecodeError(f"{what}: unsupported type {typ}")


def decode(spec: EventSpec, topics: list[str], data: str) -> dict:
    if len(topics) != 1 + len(spec.indexed):
        raise DecodeError(f"{spec.name}: expected {1 + len(spec.indexed)} topics, got {len(topics)}")
    args = {}
    for (name, typ), topic in zip(spec.indexed, topics[1:]):
        if len(topic) != 66:
            raise DecodeError(f"{spec.name}.{name}: topic is not 32 bytes")
        args[name] = topic.lower() if typ in ("string", "bytes") else _word(topic[2:].lower(), typ, f"{spec.name}.{name}")
    body = data[2:].lower() if data.startswith("0x") else data.lower()
    if len(body) % 64 or len(body) < 64 * len(spec.body):
        raise DecodeError(f"{spec.name}: data is {len(body) // 2} bytes, expected at least {32 * len(spec.body)} "
                          "in whole 32-byte words")
    static_words = len(spec.body)
    dynamic_end = 64 * static_words
    for i, (name, typ) in enumerate(spec.body):
        word = body[64 * i: 64 * (i + 1)]
        if typ == "string":
            offset = int(word, 16) * 2
            if offset % 64 or offset + 64 > len(body):
                raise DecodeError(f"{spec.name}.{name}: string offset out of range")
            length = int(body[offset: offset + 64], 16) * 2
            end = offset + 64 + length
            if end > len(body):
                raise DecodeError(f"{spec.name}.{name}: string length out of range")
            try:
                args[name] = bytes.fromhex(body[offset + 64: end]).decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError(f"{spec.name}.{name}: string is not UTF-8") from None
            dynamic_end = max(dynamic_end, offset + 64 + -(-length // 64) * 64)
        else:
            args[name] = _word(word, typ, f"{spec.name}.{name}")
    if dynamic_end != len(body):
        raise DecodeError(f"{spec.name}: data is {len(body) // 2} bytes, expected {dynamic_end // 2}")
    return args


def parse_logs(raw_logs: list[dict], contracts: dict[str, str]) -> list[Log]:
    """Turn eth_getLogs results into `Log`s. `contracts` maps lower-case address → "escrow" / "pool".

    Never raises for a bad log: it comes back with `error` set and `name` empty.
    """
    table = specs()
    out = []
    append = out.append
    for raw in raw_logs:
        address = raw["address"].lower()
        contract = contracts.get(address, "")
        topics = raw.get("topics") or []
        ts = raw.get("blockTimestamp")
        log = Log(int(raw["blockNumber"], 16), raw["blockHash"].lower(), int(ts, 16) if ts else None,
                  raw["transactionHash"].lower(), int(raw["logIndex"], 16), address, contract, "", {})
        spec = table.get((contract, topics[0].lower())) if topics else None
        if spec is None:
            log.error = f"unknown event topic {topics[0][:18] if topics else '(none)'}… from {contract or address}"
            log.args = {"topics": topics, "data": raw.get("data", "")[:2000]}
        else:
            try:
                log.args = decode(spec, topics, raw.get("data", "0x"))
                log.name = spec.name
            except (DecodeError, ValueError) as exc:
                log.error = str(exc)
                log.args = {"topics": topics, "data": raw.get("data", "")[:2000]}
        append(log)
    return out
