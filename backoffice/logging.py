"""Structured JSON logs, one line per event, with secrets, IP addresses and request objects removed.

The runbook's logging section: wallets, order ids and durations are logged; IP addresses,
request bodies, tokens, keys and other secrets never are.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from datetime import datetime, timezone

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# Candidates include the compressed forms (::1, fe80::1, 2001:db8::7); ipaddress confirms them, so
# clock times such as 12:30:45 are left alone.
_IPV6 = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9a-fA-F]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]{1,4})?"
                   r"(?![0-9A-Za-z:])")
# A 32-byte hex string is a private key or a secret as often as a hash; hashes are logged by name
# (tx_hash=...) through `extra`, which is kept; free text loses any bare 64-hex run.
_SECRETISH_TEXT = re.compile(r"(?i)\b(0x)?[0-9a-f]{64}\b")
_SECRET_KEYS = re.compile(r"(?i)(secret|password|passwd|token|private|key|signature|authorization|cookie|session)")
# Named like secrets ("key", "token") but public: hashes, alert dedup keys, ERC-20 token metadata.
_ALLOWED_KEYS = {"tx_hash", "block_hash", "calldata_hash", "key_fingerprint", "alert_key", "token_address",
                 "token_symbol"}
_DROP_ATTRS = ("request", "environ", "headers")
_STANDARD_ATTRS = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message", "asctime"}


def _ipv6_or_text(match: re.Match) -> str:
    try:
        ipaddress.IPv6Address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[ip]"


def _scrub_ips(text: str) -> str:
    text = _IPV6.sub(_ipv6_or_text, text)  # first, so ::ffff:1.2.3.4 goes whole
    return _IPV4.sub("[ip]", text)


def _scrub(text: str) -> str:
    return _SECRETISH_TEXT.sub("[redacted]", _scrub_ips(text))


class RedactFilter(logging.Filter):
    """Drops request objects, redacts secret-named fields and IP addresses in the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        for attr in _DROP_ATTRS:
            if hasattr(record, attr):
                delattr(record, attr)
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the event
            message = str(record.msg)
        record.msg, record.args = _scrub(message), None
        for key in list(vars(record)):
            if key in _STANDARD_ATTRS or key in _ALLOWED_KEYS or key.startswith("_"):
                continue
            value = getattr(record, key)
            if _SECRET_KEYS.search(key):
                setattr(record, key, "[redacted]")
            elif isinstance(value, str):
                setattr(record, key, _scrub_ips(value))  # an IP in an extra field is still an IP
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = _scrub(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(_JsonFormatter):
    """python-json-logger with UTC ISO-8601 timestamps."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return (datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"))
