"""Logs are one JSON object per line, through the configured formatter, with no IP addresses or secrets."""
from __future__ import annotations

import io
import json
import logging

import pytest
from django.conf import settings
from django.utils.module_loading import import_string


@pytest.fixture
def log():
    """A logger wired exactly like settings.LOGGING's console handler, writing to a buffer."""
    formatter_conf = dict(settings.LOGGING["formatters"]["json"])
    formatter = import_string(formatter_conf.pop("()"))(**formatter_conf)
    handler_conf = settings.LOGGING["handlers"]["console"]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    for name in handler_conf["filters"]:
        handler.addFilter(import_string(settings.LOGGING["filters"][name]["()"])())
    logger = logging.getLogger("tests.logging")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    def lines() -> list[dict]:
        text = stream.getvalue()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    logger.lines = lines
    yield logger
    logger.removeHandler(handler)


def test_logging_writes_one_json_line_per_event(log):
    log.info("order %s synced", 42, extra={"chain": "bsc"})
    log.warning("cursor lagging")
    first, second = log.lines()
    assert first["message"] == "order 42 synced"
    assert (first["level"], first["logger"], first["chain"]) == ("INFO", "tests.logging", "bsc")
    assert first["timestamp"].endswith("Z") and first["timestamp"][:2] == "20"
    assert second["level"] == "WARNING"


@pytest.mark.parametrize("address", ["203.0.113.7", "2001:db8:85a3::8a2e:370:7334", "::1", "fe80::1",
                                     "2001:db8::7", "[2001:0db8:0000:0000:0000:ff00:0042:8329]", "::ffff:192.0.2.1"])
def test_logging_redacts_ip_addresses_in_messages(log, address):
    log.info("login from %s failed", address)
    (line,) = log.lines()
    assert line["message"] in ("login from [ip] failed", "login from [[ip]] failed")


def test_logging_redacts_ip_addresses_in_extra_fields(log):
    log.info("request", extra={"client": "198.51.100.23", "peer": "peer at fe80::1%eth0"})
    (line,) = log.lines()
    assert line["client"] == "[ip]"
    assert "fe80" not in line["peer"]


def test_logging_keeps_clock_times_and_wallets(log):
    log.info("cursor moved at 12:30:45 for 0x%s", "ab" * 20, extra={"alert_key": "sync_lag:bsc",
                                                                     "token_symbol": "USDT"})
    (line,) = log.lines()
    assert line["message"] == "cursor moved at 12:30:45 for 0x" + "ab" * 20
    assert (line["alert_key"], line["token_symbol"]) == ("sync_lag:bsc", "USDT")


@pytest.mark.parametrize("key", ["private_key", "password", "api_token", "Authorization", "signer_secret"])
def test_logging_redacts_secret_named_fields(log, key):
    log.info("signed", extra={key: "0x" + "ab" * 32})
    (line,) = log.lines()
    assert line[key] == "[redacted]"
    assert "abab" not in json.dumps(line)


def test_logging_redacts_bare_64_hex_in_message_but_keeps_tx_hash_extra(log):
    tx = "0x" + "cd" * 32
    log.info("key is %s", "ef" * 32, extra={"tx_hash": tx, "wallet": "0x" + "12" * 20})
    (line,) = log.lines()
    assert "efef" not in line["message"]
    assert line["tx_hash"] == tx
    assert line["wallet"] == "0x" + "12" * 20


def test_logging_keeps_crlf_message_on_one_line(log):
    log.warning("forged\r\n{\"level\": \"CRITICAL\"}\nsecond")
    (line,) = log.lines()
    assert line["level"] == "WARNING"
    assert "forged" in line["message"] and "second" in line["message"]


def test_logging_drops_request_objects(log):
    log.error("boom", extra={"request": object()})
    (line,) = log.lines()
    assert "request" not in line


def test_logging_exception_is_one_line_without_ip(log):
    try:
        raise ValueError("cannot reach 10.0.0.5")
    except ValueError:
        log.exception("rpc failed")
    (line,) = log.lines()
    assert "ValueError" in line["exc_info"]
    assert "10.0.0.5" not in json.dumps(line)


def test_logging_bad_format_string_still_logs(log):
    log.info("%s and %s", "one")
    (line,) = log.lines()
    assert "%s and %s" in line["message"]
