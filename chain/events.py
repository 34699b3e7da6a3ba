"""Decoding the escrow's and arbitrator pool's logs straight from eth_getLogs JSON.

Built from the committed ABIs. The hot path decodes the ABI words itself (every event here has
static fields plus at most one string), with a decoder generated per event, because web3's per-log
formatters run at a fraction of the speed the sync needs (DEVELOPERS.md, facts);
`tests/chain/test_events.py` checks the decoders against web3 on a real market and against the
generic `decode` on generated input. Anything that does not match its ABI exactly raises `DecodeError`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache

from eth_utils import keccak

from .deploy import load_artifact

CONTRACTS = {"escrow": "P2PEscrow", "pool": "ArbitratorPool"}


_HEX = re.compile(r"[0-9a-f]*")
_UINT = re.compile(r"uint(8|16|24|32|40|48|56|64|72|80|88|96|104|112|120|128|136|144|152|160|168|176|184|192|200|208|"
                   r"216|224|232|240|248|256)?")


class DecodeError(ValueError):
    pass


class MalformedResponse(ValueError):
    """A log whose own keys (block hash, transaction hash) are not what any node returns: the provider's
    fault, not the log's. It cannot even be recorded as malformed, so the run stops on it."""


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
    args_json: str = ""  # the args as JSON text, when the decoder built it


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
    for (name, typ), topic in zip(spec.indexed, topics[1:], strict=True):
        if len(topic) != 66 or not _HEX.fullmatch(topic.lower(), 2):
            raise DecodeError(f"{spec.name}.{name}: topic is not 32 bytes of hex")
        args[name] = (topic.lower() if typ in ("string", "bytes")
                      else _word(topic[2:].lower(), typ, f"{spec.name}.{name}"))
    body = data[2:].lower() if data.startswith("0x") else data.lower()
    if len(body) % 64 or len(body) < 64 * len(spec.body) or not _HEX.fullmatch(body):
        raise DecodeError(f"{spec.name}: data is {len(body) // 2} bytes, expected at least {32 * len(spec.body)} "
                          "in whole 32-byte words of hex")
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


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # one encoder: json.dumps builds one per call


def dumps_args(value) -> str:
    """Event args as compact JSON (big integers stay exact: JSONB numbers are arbitrary precision)."""
    return _ENCODER.encode(value)


def _compile(spec: EventSpec):
    """A straight-line decoder for one static-only event: (args, args as JSON text), or `DecodeError`.

    Generated from the ABI so the hot path runs no per-word loop or type dispatch; it checks exactly what
    `decode` checks (its twin for events with strings, and the reference the tests hold it to), and also that
    every word is lower-case hex, so a broken provider's data never reaches a CHECK constraint.
    """
    if not all(typ in ("address", "bool", "bytes32") or _UINT.fullmatch(typ) for _, typ in spec.indexed + spec.body):
        return None  # a string, an array, a signed int...: the generic `decode`
    lines = ["def _decode(topics, data):",
             f"    if len(topics) != {1 + len(spec.indexed)}:",
             f"        raise DecodeError({spec.name!r} + f': expected {1 + len(spec.indexed)} topics, "
             f"got {{len(topics)}}')"]
    words = []  # (name, type, expression of its 64 hex characters)
    for i, (name, typ) in enumerate(spec.indexed, start=1):
        lines += [f"    t{i} = topics[{i}].lower()",
                  f"    if len(t{i}) != 66 or not _HEX(t{i}, 2):",
                  f"        raise DecodeError({spec.name + '.' + name + ': topic is not 32 bytes of hex'!r})"]
        words.append((name, typ, f"t{i}", 2))
    n = len(spec.body)
    lines += ["    body = data[2:].lower() if data.startswith('0x') else data.lower()",
              f"    if len(body) != {64 * n} or not _HEX(body):",
              f"        raise DecodeError({spec.name!r} + f': data is {{len(body) // 2}} bytes, "
              f"expected {32 * n} in hex')"]
    words += [(name, typ, "body", 64 * i) for i, (name, typ) in enumerate(spec.body)]
    values, text = [], []  # the dict's items; the JSON text as the pieces of an f-string
    for k, (name, typ, src, at) in enumerate(words):
        what = f"{spec.name}.{name}"
        v = f"v{k}"
        text.append(("{{" if k == 0 else ",") + f'"{name}":')
        if typ == "address":
            lines += [f"    if {src}[{at}:{at + 24}] != '{'0' * 24}':",
                      f"        raise DecodeError({what + ': address word has non-zero high bytes'!r})",
                      f"    {v} = '0x' + {src}[{at + 24}:{at + 64}]"]
            text.append(f'"{{{v}}}"')
        elif typ == "bool":
            lines += [f"    {v} = {src}[{at}:{at + 64}]",
                      f"    if {v} == '{'0' * 63}1':",
                      f"        {v} = True",
                      f"    elif {v} == '{'0' * 64}':",
                      f"        {v} = False",
                      "    else:",
                      f"        raise DecodeError({what + ': bool word is not 0 or 1'!r})"]
            text.append(f'{{"true" if {v} else "false"}}')
        elif typ == "bytes32":
            lines.append(f"    {v} = '0x' + {src}[{at}:{at + 64}]")
            text.append(f'"{{{v}}}"')
        else:
            bits = int(typ[4:] or 256)
            lines.append(f"    {v} = int({src}[{at}:{at + 64}], 16)")
            if bits < 256:
                lines += [f"    if {v} >> {bits}:",
                          f"        raise DecodeError({what + ': value does not fit ' + typ!r})"]
            text.append(f"{{{v}}}")
        values.append(f"{name!r}: {v}")
    text.append("}}" if words else "{{}}")
    # Names and JSON punctuation only: no quote or backslash to escape in the f-string.
    lines.append(f"    return {{{', '.join(values)}}}, f'{''.join(text)}'")
    namespace = {"DecodeError": DecodeError, "_HEX": _HEX.fullmatch}
    spec_source = "\n".join(lines)
    exec(spec_source, namespace)  # noqa: S102 - source built above from the committed ABI only
    return namespace["_decode"]


@lru_cache(maxsize=1)
def decoders() -> dict[tuple[str, str], tuple[EventSpec, object]]:
    """{(contract, topic0): (spec, compiled decoder or None)}: None for events with a string (`decode`)."""
    return {key: (spec, _compile(spec)) for key, spec in specs().items()}


def parse_logs(raw_logs: list[dict], contracts: dict[str, str]) -> list[Log]:
    """Turn eth_getLogs results into `Log`s. `contracts` maps lower-case address → "escrow" / "pool".

    Never raises for a bad log: it comes back with `error` set and `name` empty (but raises
    `MalformedResponse` for a log whose block or transaction hash is not hex). A decoded log also carries
    its args as JSON text (`args_json`), built by the decoder instead of a JSON encoder pass.
    """
    table = decoders()
    out = []
    append = out.append
    for raw in raw_logs:
        address = raw["address"].lower()
        contract = contracts.get(address, "")
        topics = raw.get("topics") or []
        ts = raw.get("blockTimestamp")
        block_hash, tx_hash = raw["blockHash"].lower(), raw["transactionHash"].lower()
        if not (len(block_hash) == len(tx_hash) == 66 and block_hash[:2] == tx_hash[:2] == "0x"
                and _HEX.fullmatch(block_hash, 2) and _HEX.fullmatch(tx_hash, 2)):
            raise MalformedResponse(f"the provider returned a log with block hash {block_hash[:80]!r} and transaction "
                                    f"hash {tx_hash[:80]!r}: not 32 bytes of hex each")
        log = Log(int(raw["blockNumber"], 16), block_hash, int(ts, 16) if ts else None,
                  tx_hash, int(raw["logIndex"], 16), address, contract, "", {})
        entry = table.get((contract, topics[0].lower())) if topics else None
        if entry is None:
            log.error = f"unknown event topic {topics[0][:18] if topics else '(none)'}… from {contract or address}"
            log.args = {"topics": topics, "data": raw.get("data", "")[:2000]}
        else:
            spec, compiled = entry
            try:
                if compiled is not None:
                    log.args, log.args_json = compiled(topics, raw.get("data", "0x"))
                else:
                    log.args = decode(spec, topics, raw.get("data", "0x"))
                    log.args_json = dumps_args(log.args)
                log.name = spec.name
            except (DecodeError, ValueError) as exc:
                log.error = str(exc)
                log.args = {"topics": topics, "data": raw.get("data", "")[:2000]}
        append(log)
    return out
