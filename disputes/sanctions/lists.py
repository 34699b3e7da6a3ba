"""Reading sanctions lists: OFAC's SDN XML (sdn_advanced.xml, or the older sdn.xml) and the address lists derived
from it (`sanctioned_addresses_ETH.txt`: one 0x address a line; or the same as a JSON array).

Only EVM addresses are ours. The SDN lists digital-currency addresses as features named "Digital Currency Address -
<ASSET>"; any such value written 0x… is an EVM address and is kept, whatever the asset (ETH, USDT, USDC, BSC, ARB,
ETC, …); a value under an EVM-only asset that is not one is an error; the rest (XBT, TRX, USDT on Tron, …) belong to
other chains and are counted, not kept. A 0x value that is not 0x and 40 hex digits is an error, as is a line of a
derived list that is not an address: the import refuses the file unless forced. A mixed-case address whose EIP-55
checksum is wrong still names a 20-byte key: it is kept (lower-cased) with a warning, since a screen should rather
match a typo'd listing than miss it.

Parsing streams (iterparse, each party cleared once read): the real sdn_advanced.xml is over a hundred megabytes.
"""
from __future__ import annotations

import io
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from eth_utils import to_checksum_address

FEATURE_PREFIX = "Digital Currency Address - "
# Assets whose every address is an EVM address: a listed value that is not one is a broken entry, not another chain's.
EVM_ONLY_ASSETS = frozenset({"ETH", "ETC", "BSC", "ARB", "BNB", "MATIC", "POL", "BASE", "OP", "AVAXC"})
MAX_BYTES = 512 * 2**20  # sdn_advanced.xml is ~120 MB; anything far bigger is not it
MAX_ERRORS_SHOWN = 20
_HEX40 = re.compile(r"^0x[0-9a-fA-F]{40}$")
_DERIVED_NAME = re.compile(r"sanctioned_addresses_([A-Za-z0-9]+)\.(?:txt|json)$")
_SDN_DATE = re.compile(r"^(\d{2})/(\d{2})/(\d{4})$")


class ListFormatError(ValueError):
    """The file is not a sanctions list we can read: nothing can force it in."""


@dataclass
class ListEntry:
    address: str
    assets: list[str] = field(default_factory=list)
    sdn_uid: int | None = None
    sdn_name: str = ""


@dataclass
class ParsedList:
    format: str  # a SanctionsListFormat value
    list_key: str
    published_at: datetime | None = None
    entries: dict[str, ListEntry] = field(default_factory=dict)
    other_chains: dict[str, int] = field(default_factory=dict)  # asset -> values kept out (not EVM addresses)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # refused unless forced (then skipped)

    def add(self, value: str, asset: str, *, where: str, uid: int | None = None, name: str = "") -> None:
        """One listed value under `asset`, `where` naming it for a message (an SDN entry, a line)."""
        text = (value or "").strip()
        if not text.lower().startswith("0x"):
            if asset in EVM_ONLY_ASSETS or self.format == "address_list":
                self.errors.append(f"{where}: {_echo(text)} is not an EVM address (0x and 40 hex digits).")
            else:
                self.other_chains[asset] = self.other_chains.get(asset, 0) + 1
            return
        if not _HEX40.match(text):
            self.errors.append(f"{where}: {_echo(text)} is not an EVM address (0x and 40 hex digits).")
            return
        body = text[2:]
        if body != body.lower() and body != body.upper() and to_checksum_address(text) != text:
            self.warnings.append(f"{where}: {text} has a wrong EIP-55 checksum; kept as {text.lower()}.")
        address = text.lower()
        entry = self.entries.get(address)
        if entry is None:
            self.entries[address] = ListEntry(address, [asset], uid, name)
            return
        if asset not in entry.assets:
            entry.assets.append(asset)
        if entry.sdn_uid is None and uid is not None:
            entry.sdn_uid, entry.sdn_name = uid, name

    def notes(self) -> list[str]:
        """What a version records about what its import set aside."""
        out = [f"{n} {asset} address(es) of other chains left out" for asset, n in sorted(self.other_chains.items())]
        return out + self.warnings


def _echo(text: str) -> str:
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return repr(clean[:60] + ("…" if len(clean) > 60 else ""))


def asset_from_name(name: str) -> str | None:
    """ETH from …/sanctioned_addresses_ETH.txt (the derived lists' naming), else None."""
    path = urlsplit(name).path if "://" in name else name
    match = _DERIVED_NAME.search(PurePosixPath(path).name)
    return match.group(1).upper() if match else None


def parse_list(data: bytes, *, name: str, asset: str | None = None) -> ParsedList:
    """Read `data` (the file as downloaded; `name` its URL or file name). Raises ListFormatError for a file that is
    not a sanctions list; bad addresses are in `.errors` for the import to refuse (or skip when forced)."""
    if len(data) > MAX_BYTES:
        raise ListFormatError(f"{name} is {len(data) / 2**20:.0f} MB, over {MAX_BYTES // 2**20} MB: not a sanctions "
                              "list (sdn_advanced.xml is about 120 MB).")
    head = data[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"<"):
        if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
            raise ListFormatError(f"{name} declares a DOCTYPE or entities: OFAC's SDN XML has none; refused unread.")
        parsed = _parse_xml(data, name)
    else:
        parsed = _parse_addresses(data, name, asset)
    if not parsed.entries and not parsed.errors:
        found = f" (only other chains': {', '.join(sorted(parsed.other_chains))})" if parsed.other_chains else ""
        raise ListFormatError(f"{name} lists no EVM address{found}: is it the right file?")
    return parsed


# ---------------------------------------------------------------------------- derived address lists


def _parse_addresses(data: bytes, name: str, asset: str | None) -> ParsedList:
    asset = (asset or asset_from_name(name) or "").upper()
    if not asset:
        raise ListFormatError(f"{name}: say which asset the addresses are listed under (--asset ETH), or keep the "
                              "derived list's name, sanctioned_addresses_<ASSET>.txt.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ListFormatError(f"{name}: line {line} is not UTF-8 text: not an address list.") from None
    parsed = ParsedList(format="address_list", list_key=f"ofac-{asset}")
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ListFormatError(f"{name}: not valid JSON at line {exc.lineno}: {exc.msg}.") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ListFormatError(f"{name}: a JSON address list is an array of strings.")
        for i, value in enumerate(values):
            parsed.add(value, asset, where=f"item {i + 1}")
        return parsed
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            parsed.add(line, asset, where=f"line {number}")
    return parsed


# ---------------------------------------------------------------------------- SDN XML


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _parse_xml(data: bytes, name: str) -> ParsedList:
    events = ET.iterparse(io.BytesIO(data), events=("start", "end"))
    try:
        _, root = next(events)
        kind = _local(root.tag)
        if kind == "Sanctions":
            return _advanced(events, root, name)
        if kind == "sdnList":
            return _classic(events, root, name)
    except ET.ParseError as exc:
        raise ListFormatError(f"{name} is not well-formed XML ({exc}): a truncated download?") from None
    raise ListFormatError(f"{name}: an XML document whose root is <{kind}>, not OFAC's <Sanctions> (sdn_advanced.xml) "
                          "or <sdnList> (sdn.xml).")


def _advanced(events, root, name: str) -> ParsedList:
    """sdn_advanced.xml: ReferenceValueSets/FeatureTypeValues name the feature types; each DistinctParty
    (FixedRef: the SDN uid) has a Profile with the primary Identity's primary Alias (its name) and Features whose
    FeatureVersion/VersionDetail holds the value."""
    parsed = ParsedList(format="sdn_advanced_xml", list_key="ofac-sdn")
    feature_assets: dict[str, str] = {}
    date: dict[str, int] = {}
    in_date, depth = False, 1
    for event, elem in events:
        tag = _local(elem.tag)
        if event == "start":
            depth += 1
            in_date = in_date or (tag == "DateOfIssue")
            continue
        depth -= 1
        if in_date and tag in ("Year", "Month", "Day") and (elem.text or "").strip().isdigit():
            date[tag] = int(elem.text)
        elif tag == "DateOfIssue":
            in_date = False
        elif tag == "FeatureType":
            text = (elem.text or "").strip()
            if text.startswith(FEATURE_PREFIX):
                feature_assets[elem.get("ID", "")] = text[len(FEATURE_PREFIX):].strip().upper()
        elif tag == "DistinctParty":
            _party(parsed, elem, feature_assets)
            elem.clear()
        if depth == 1:  # a section of the document read to its end (locations, documents, entries): let it go
            elem.clear()
    if not feature_assets:
        raise ListFormatError(f"{name}: no 'Digital Currency Address' feature types in ReferenceValueSets: not the "
                              "SDN advanced XML, or a truncated one.")
    if len(date) == 3:
        try:
            parsed.published_at = datetime(date["Year"], date["Month"], date["Day"], tzinfo=timezone.utc)
        except ValueError:
            parsed.warnings.append(f"DateOfIssue {date} is not a date; the version has no publication date.")
    return parsed


def _party(parsed: ParsedList, party, feature_assets: dict[str, str]) -> None:
    ref = party.get("FixedRef", "")
    uid = int(ref) if ref.isdigit() else None
    name = ""
    for identity in party.iter():
        if _local(identity.tag) == "Identity" and identity.get("Primary") == "true":
            for alias in identity:
                if _local(alias.tag) == "Alias" and alias.get("Primary") == "true":
                    parts = [(v.text or "").strip() for v in alias.iter() if _local(v.tag) == "NamePartValue"]
                    name = " ".join(p for p in parts if p)
                    break
            break
    for feature in party.iter():
        if _local(feature.tag) != "Feature":
            continue
        asset = feature_assets.get(feature.get("FeatureTypeID", ""))
        if asset is None:
            continue
        for detail in feature.iter():
            if _local(detail.tag) == "VersionDetail":
                parsed.add(detail.text or "", asset, where=f"SDN {ref} ({name or 'no name'}), {FEATURE_PREFIX}{asset}",
                           uid=uid, name=name)


def _classic(events, root, name: str) -> ParsedList:
    """sdn.xml: sdnEntry (uid, firstName, lastName) with idList/id (idType 'Digital Currency Address - X', idNumber);
    publshInformation/Publish_Date as MM/DD/YYYY."""
    parsed = ParsedList(format="sdn_xml", list_key="ofac-sdn")
    for event, elem in events:
        if event != "end":
            continue
        tag = _local(elem.tag)
        if tag == "Publish_Date":
            match = _SDN_DATE.match((elem.text or "").strip())
            if match:
                month, day, year = map(int, match.groups())
                try:
                    parsed.published_at = datetime(year, month, day, tzinfo=timezone.utc)
                except ValueError:
                    parsed.warnings.append(f"Publish_Date {elem.text!r} is not a date.")
        elif tag == "sdnEntry":
            fields = {_local(child.tag): (child.text or "").strip() for child in elem}
            uid = int(fields["uid"]) if fields.get("uid", "").isdigit() else None
            who = " ".join(p for p in (fields.get("firstName", ""), fields.get("lastName", "")) if p)
            for ident in elem.iter():
                if _local(ident.tag) != "id":
                    continue
                values = {_local(c.tag): (c.text or "").strip() for c in ident}
                id_type = values.get("idType", "")
                if id_type.startswith(FEATURE_PREFIX):
                    asset = id_type[len(FEATURE_PREFIX):].strip().upper()
                    parsed.add(values.get("idNumber", ""), asset, where=f"SDN {uid} ({who or 'no name'}), {id_type}",
                               uid=uid, name=who)
            elem.clear()
    return parsed
