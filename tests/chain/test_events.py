"""The sync's own ABI decoders agree with web3 on every event of a real run and with the generic decoder on
any input, build the same args as JSON, and never raise on a bad log."""
from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from web3 import Web3

from chain.deploy import get_contract
from chain.events import DecodeError, MalformedResponse, decode, decoders, parse_logs, specs

from .conftest import topic

pytestmark = pytest.mark.anvil

MARKET_ORDERS = 40

REQUIRED_EVENTS = {
    "OrderCreated", "OrderDelivered", "OrderCompleted", "OrderCancelled", "OrderDisputed", "EvidenceSubmitted",
    "DisputeResolved", "OrderExpired", "OrderAutoReleased", "ArbitratorRegistered", "ArbitratorAssigned",
    "ArbitratorResolved", "ReputationChanged", "ArbitratorDeactivated", "ArbitratorDeregistered",
}


@pytest.fixture(scope="module")
def raw_logs(anvil_node, deployment, chain_market) -> list[dict]:
    return anvil_node.get_logs(deployment.deploy_block, anvil_node.head(), [deployment.escrow, deployment.pool])


@pytest.fixture(scope="module")
def contracts(deployment) -> dict[str, str]:
    return {deployment.escrow: "escrow", deployment.pool: "pool"}


def by_name(raw_logs, contracts, name: str, where=lambda log: True) -> dict:
    for raw, log in zip(raw_logs, parse_logs(raw_logs, contracts), strict=True):
        if log.name == name and where(log):
            return copy.deepcopy(raw)
    raise AssertionError(f"no {name} log in the market")


def web3_args(w3: Web3, contract, log) -> tuple[str, dict]:
    """Decode one log with web3's own event machinery (the reference)."""
    for event_abi in contract.abi:
        if event_abi["type"] != "event":
            continue
        signature = f"{event_abi['name']}({','.join(i['type'] for i in event_abi['inputs'])})"
        if log["topics"][0] == Web3.keccak(text=signature):
            decoded = contract.events[event_abi["name"]]().process_log(log)
            return decoded["event"], dict(decoded["args"])
    raise AssertionError(f"web3 knows no event for topic {log['topics'][0].hex()}")


def normalise(value):
    return value.lower() if isinstance(value, str) and value.startswith("0x") else value


def test_parse_logs_equals_web3_decoding_for_every_event_of_a_real_market(anvil_node, deployment, chain_market,
                                                                           raw_logs, contracts):
    w3 = Web3(Web3.HTTPProvider(anvil_node.url))
    web3_logs = w3.eth.get_logs({"fromBlock": deployment.deploy_block, "toBlock": anvil_node.head(),
                                 "address": [Web3.to_checksum_address(a) for a in contracts]})
    by_contract = {deployment.escrow: get_contract(w3, "P2PEscrow", deployment.escrow),
                   deployment.pool: get_contract(w3, "ArbitratorPool", deployment.pool)}
    ours = parse_logs(raw_logs, contracts)

    assert len(ours) == len(web3_logs) > 0
    seen = set()
    for log, reference in zip(ours, web3_logs, strict=True):
        assert (log.tx_hash, log.log_index) == ("0x" + reference["transactionHash"].hex().removeprefix("0x"),
                                                reference["logIndex"])
        assert log.block_number == reference["blockNumber"]
        assert log.block_hash == "0x" + reference["blockHash"].hex().removeprefix("0x")
        assert log.error == "", log.error
        name, args = web3_args(w3, by_contract[log.address], reference)
        assert log.name == name
        assert log.args == {k: normalise(v) for k, v in args.items()}, name
        assert json.loads(log.args_json) == log.args, name
        seen.add(name)
    assert REQUIRED_EVENTS <= seen


def test_parse_logs_decodes_dispute_evidence_strings_exactly(raw_logs, contracts):
    cids = {log.args["evidenceCid"] for log in parse_logs(raw_logs, contracts) if log.name == "OrderDisputed"}
    assert {"", "not a cid {\"x\"}", "ünïcødé-evidence-✓",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"} <= cids


def _replace_word(data: str, index: int, word: str) -> str:
    body = data[2:]
    return "0x" + body[:64 * index] + word + body[64 * (index + 1):]


MUTATIONS = {
    "unknown_topic": ("OrderCreated", lambda raw: raw["topics"].__setitem__(0, topic("Surprise(uint256)"))),
    "data_one_word_short": ("OrderCreated", lambda raw: raw.__setitem__("data", raw["data"][:-64])),
    "data_one_word_long": ("OrderCreated", lambda raw: raw.__setitem__("data", raw["data"] + "00" * 32)),
    "data_not_whole_words": ("OrderDelivered", lambda raw: raw.__setitem__("data", raw["data"] + "00")),
    "data_not_hex": ("OrderDelivered", lambda raw: raw.__setitem__("data", "0x" + "zz" * 32)),
    "extra_topic": ("OrderDelivered", lambda raw: raw["topics"].append("0x" + "00" * 32)),
    "missing_topic": ("OrderCreated", lambda raw: raw["topics"].pop()),
    "short_topic": ("OrderCreated", lambda raw: raw["topics"].__setitem__(1, "0x01")),
    "address_high_bytes_in_data": ("OrderCreated", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 0, "ff" + raw["data"][4:66]))),
    "address_high_bytes_in_topic": ("OrderCreated", lambda raw: raw["topics"].__setitem__(
        2, "0x01" + raw["topics"][2][4:])),
    "bool_word_not_0_or_1": ("DisputeResolved", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 0, f"{2:064x}"))),
    "uint64_overflow": ("OrderDelivered", lambda raw: raw.__setitem__("data", "0x" + f"{2**64:064x}")),
    "string_offset_out_of_range": ("OrderDisputed", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 1, f"{0x1000:064x}"))),
    "string_offset_not_word_aligned": ("OrderDisputed", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 1, f"{0x41:064x}"))),
    "string_length_out_of_range": ("OrderDisputed", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 2, f"{0x10000:064x}"))),
    "string_not_utf8": ("OrderDisputed", lambda raw: raw.__setitem__(
        "data", raw["data"][:2 + 64 * 3] + "ff" * 4 + raw["data"][2 + 64 * 3 + 8:])),
    "string_trailing_garbage": ("OrderDisputed", lambda raw: raw.__setitem__("data", raw["data"] + "00" * 32)),
    "no_topics": ("OrderCreated", lambda raw: raw.__setitem__("topics", [])),
    # Not hex: a broken provider's word must never reach the mirror's CHECK constraints.
    "address_not_hex_in_data": ("OrderCreated", lambda raw: raw.__setitem__(
        "data", _replace_word(raw["data"], 0, "00" * 12 + "zz" * 20))),
    "address_not_hex_in_topic": ("OrderCreated", lambda raw: raw["topics"].__setitem__(
        2, "0x" + "00" * 12 + "g1" * 20)),
    "uint_with_underscores": ("OrderDelivered", lambda raw: raw.__setitem__("data", "0x" + "0" * 62 + "_1")),
    "address_not_hex_in_a_string_event": ("OrderDisputed", lambda raw: raw["topics"].__setitem__(
        2, "0x" + "00" * 12 + "zz" * 20)),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_parse_logs_marks_a_malformed_log_with_an_error_and_never_raises(raw_logs, contracts, mutation):
    name, mutate = MUTATIONS[mutation]
    raw = by_name(raw_logs, contracts, name,
                  where=lambda log: name != "OrderDisputed" or len(log.args["evidenceCid"]) >= 8)
    mutate(raw)
    [log] = parse_logs([raw], contracts)
    assert log.error, f"{mutation} was accepted: {log.args}"
    assert log.name == ""
    assert log.args["topics"] == raw["topics"] and log.args["data"] == raw["data"][:2000]
    assert (log.tx_hash, log.log_index, log.block_number) == (
        raw["transactionHash"].lower(), int(raw["logIndex"], 16), int(raw["blockNumber"], 16))


def test_parse_logs_marks_a_log_from_an_unknown_contract(anvil_node, deployment, chain_market, contracts):
    token = deployment.tokens["USDT"]
    [raw, *_] = anvil_node.get_logs(deployment.deploy_block, anvil_node.head(), [token])
    [log] = parse_logs([raw], contracts)
    assert log.error.startswith("unknown event topic") and token in log.error
    assert log.contract == ""


def test_parse_logs_keeps_good_logs_around_a_bad_one(raw_logs, contracts):
    good = raw_logs[:50]
    bad = copy.deepcopy(raw_logs[10])
    bad["data"] += "00"
    logs = parse_logs(good[:25] + [bad] + good[25:], contracts)
    assert [log.error != "" for log in logs] == [False] * 25 + [True] + [False] * 25


hex_word = st.binary(min_size=32, max_size=32).map(lambda b: "0x" + b.hex())


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec_index=st.integers(min_value=0), extra_topics=st.lists(hex_word, max_size=4),
       data=st.binary(max_size=400), drop=st.integers(min_value=0, max_value=4))
def test_parse_logs_never_raises_on_arbitrary_topics_and_data(spec_index, extra_topics, data, drop):
    table = sorted(specs().items())
    (contract, topic0), _spec = table[spec_index % len(table)]
    address = "0x" + "11" * 20
    raw = {"address": address, "topics": [topic0, *extra_topics][:max(1, 1 + len(extra_topics) - drop)],
           "data": "0x" + data.hex(), "blockNumber": "0x10", "blockHash": "0x" + "22" * 32,
           "transactionHash": "0x" + "33" * 32, "logIndex": "0x0"}
    [log] = parse_logs([raw], {address: contract})
    assert bool(log.error) != bool(log.name)


def test_parse_logs_refuses_a_response_whose_hashes_are_not_hex(raw_logs, contracts):
    for key in ("transactionHash", "blockHash"):
        raw = copy.deepcopy(raw_logs[0])
        raw[key] = raw[key][:-2] + "\t\n"  # would break the COPY stream the raw events go through
        with pytest.raises(MalformedResponse, match="not 32 bytes of hex"):
            parse_logs([raw], contracts)


compiled_specs = sorted((key, spec) for key, (spec, compiled) in decoders().items() if compiled is not None)


def word_for(typ: str):
    """Well-formed 32-byte words of an ABI type (hex, no 0x), and sometimes a malformed one."""
    zero = "0" * 24
    if typ == "address":
        good = st.binary(min_size=20, max_size=20).map(lambda b: zero + b.hex())
    elif typ == "bool":
        good = st.sampled_from(["0" * 64, "0" * 63 + "1"])
    elif typ == "bytes32":
        good = st.binary(min_size=32, max_size=32).map(bytes.hex)
    else:
        bits = int(typ[4:] or 256)
        good = st.integers(min_value=0, max_value=2**bits - 1).map(lambda v: f"{v:064x}")
    return st.one_of(good, good, good, st.binary(min_size=32, max_size=32).map(bytes.hex),
                     st.text("0123456789abcdefABCDEF_xg ", min_size=64, max_size=64))


@st.composite
def event_input(draw):
    (_, _), spec = draw(st.sampled_from(compiled_specs))
    topics = [spec.topic0] + ["0x" + draw(word_for(typ)) for _, typ in spec.indexed]
    data = "0x" + "".join(draw(word_for(typ)) for _, typ in spec.body)
    if draw(st.integers(0, 9)) == 0:
        data += draw(st.sampled_from(["00", "0" * 64]))
    return spec, topics, data


@hsettings(max_examples=500, deadline=None)
@given(event_input())
def test_generated_decoders_agree_with_the_generic_decoder_and_their_json_with_their_args(case):
    spec, topics, data = case
    compiled = decoders()[(spec.contract, spec.topic0)][1]
    try:
        expected = decode(spec, topics, data)
    except (DecodeError, ValueError):
        with pytest.raises((DecodeError, ValueError)):
            compiled(topics, data)
        return
    args, text = compiled(topics, data)
    assert args == expected
    assert json.loads(text) == args
