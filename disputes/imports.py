"""Blacklist CSV import: parse and validate a whole file; one bad row rejects the file, naming its line."""
from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone

from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime

from chain.addresses import canonical_wallet

from .models import REASON_MAX_LENGTH, STAFF_SOURCES, Blacklist

MAX_BYTES = 1_000_000
MAX_ROWS = 10_000
REQUIRED = ("wallet", "reason", "source")
OPTIONAL = ("expires_at",)


@dataclass
class ParsedRow:
    line: int
    wallet: str
    reason: str
    source: str
    expires_at: datetime | None


@dataclass
class ParseResult:
    rows: list[ParsedRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.rows)


def parse_blacklist_csv(data: bytes | str, *, now: datetime | None = None) -> ParseResult:
    """Columns wallet, reason, source (manual/automatic/import) and optional expires_at (ISO 8601, UTC)."""
    result = ParseResult()
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            result.errors.append(f"The file is over {MAX_BYTES // 1000} kB: split it.")
            return result
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            # Name the line, as for every other bad row, so the person can find the stray byte.
            # (utf-8-sig reports the offset after a byte-order mark.)
            body = data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data
            line = body[:exc.start].count(b"\n") + 1
            result.errors.append(f"line {line}: the file is not UTF-8 text: export it as CSV (UTF-8).")
            return result
    reader = csv.DictReader(io.StringIO(data, newline=""))
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        result.errors.append(f"line 1: missing column(s) {', '.join(missing)}; the header must be "
                             "wallet,reason,source[,expires_at].")
        return result
    unknown = [c for c in header if c not in REQUIRED + OPTIONAL]
    if unknown:
        result.errors.append(f"line 1: unknown column(s) {', '.join(unknown)}.")
        return result
    reader.fieldnames = header
    now = now or datetime.now(timezone.utc)
    seen: dict[str, int] = {}
    try:
        for record in reader:
            line = reader.line_num
            if len(result.rows) + len(result.errors) >= MAX_ROWS:
                result.errors.append(f"The file has more than {MAX_ROWS} rows: split it.")
                break
            if None in record:  # more cells than columns
                result.errors.append(f"line {line}: too many cells.")
                continue
            _row(record, line, now, seen, result)
    except csv.Error as exc:
        result.errors.append(f"line {reader.line_num}: not valid CSV ({exc}).")
    if not result.rows and not result.errors:
        result.errors.append("The file has no rows.")
    if result.rows:
        active = set(Blacklist.objects.active().filter(wallet__in=[r.wallet for r in result.rows])
                     .values_list("wallet", flat=True))
        for row in result.rows:
            if row.wallet in active:
                result.errors.append(f"line {row.line}: {row.wallet} is already blacklisted (duplicate).")
    result.errors.sort(key=lambda e: int(e.split(":")[0].split()[-1]) if e.startswith("line ") else 0)
    return result


def _row(record: dict, line: int, now: datetime, seen: dict[str, int], result: ParseResult) -> None:
    values = {k: (v or "").strip() for k, v in record.items()}
    if any("\x00" in v for v in values.values()):  # PostgreSQL text cannot hold it: the insert would fail
        result.errors.append(f"line {line}: contains a NUL (0x00) character: remove it and export again.")
        return
    try:
        wallet = canonical_wallet(values["wallet"])
    except ValidationError as exc:
        result.errors.append(f"line {line}: wallet: {exc.message_dict['wallet'][0]}")
        return
    if wallet in seen:
        result.errors.append(f"line {line}: {wallet} is also on line {seen[wallet]} (duplicate).")
        return
    seen[wallet] = line
    if not values["reason"]:
        result.errors.append(f"line {line}: reason is empty.")
        return
    if len(values["reason"]) > REASON_MAX_LENGTH:
        # Refused, not cut: a reason stored shorter than the file says would go unnoticed.
        result.errors.append(f"line {line}: reason is {len(values['reason']):,} characters long: shorten it to at "
                             f"most {REASON_MAX_LENGTH:,}.")
        return
    if values["source"] not in STAFF_SOURCES:
        result.errors.append(f"line {line}: unknown source {values['source'][:20]!r}: use manual, automatic or import.")
        return
    expires_at = None
    if values.get("expires_at"):
        try:
            expires_at = parse_datetime(values["expires_at"])
        except ValueError:  # well-formed but impossible, e.g. 2026-02-30: parse_datetime raises
            expires_at = None
        if expires_at is None:
            result.errors.append(f"line {line}: expires_at {values['expires_at'][:30]!r} is not a date-time "
                                 "(use 2026-12-31T00:00:00Z).")
            return
        if expires_at.tzinfo is None:
            expires_at = expires_at.replace(tzinfo=timezone.utc)
        if expires_at <= now:
            result.errors.append(f"line {line}: expires_at is in the past.")
            return
    result.rows.append(ParsedRow(line, wallet, values["reason"], values["source"], expires_at))
