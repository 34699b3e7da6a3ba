"""Sanctions lists (disputes.sanctions.lists and import_sanctions_list): the real formats read from samples shipped as
test data, every import a kept version, and every refusal a clear error that writes nothing."""
from __future__ import annotations

import hashlib
import io
from datetime import datetime, timezone
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from backoffice.audit.models import AuditLog
from disputes.models import SanctionsEntry, SanctionsListVersion
from disputes.sanctions.lists import ListFormatError, asset_from_name, parse_list
from disputes.sanctions.services import import_sanctions_list

DATA = Path(__file__).parent / "data"
SDN_ADVANCED = (DATA / "sdn_advanced_sample.xml").read_bytes()
SDN_CLASSIC = (DATA / "sdn_sample.xml").read_bytes()
ETH_LIST = (DATA / "sanctioned_addresses_ETH.txt").read_bytes()
LAZARUS = "0x098b716b8aaf21512996dc57eb0615e2383e2f96"
GARANTEX = "0x6f1ca141a28907f78ebaa64fb83a9088b02a8352"
ACTOR = "system:test"


def _import(data: bytes, source: str = "sanctioned_addresses_ETH.txt", **kwargs) -> SanctionsListVersion:
    return import_sanctions_list(actor=ACTOR, data=data, source=source, **kwargs)


def _lines(data: bytes) -> list[str]:
    return data.decode().split()


# ---------------------------------------------------------------------------- the formats


def test_sdn_advanced_xml_yields_every_evm_address_with_its_sdn_name_uid_and_assets():
    parsed = parse_list(SDN_ADVANCED, name="sdn_advanced.xml")

    assert (parsed.format, parsed.list_key) == ("sdn_advanced_xml", "ofac-sdn")
    assert parsed.published_at == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert len(parsed.entries) == 7
    lazarus = parsed.entries[LAZARUS]
    assert (lazarus.sdn_uid, lazarus.sdn_name, lazarus.assets) == (91001, "LAZARUS GROUP", ["ETH"])
    assert parsed.entries[GARANTEX].assets == ["ETH", "USDT"], "one address listed under two assets is one entry"
    assert parsed.entries["0x4736dcf1b7a3d580672cce6e7c65cd5cc9cfba9d"].assets == ["BSC"]
    # Bitcoin and USDT on Tron are other chains' addresses: counted, not kept, and not an error.
    assert parsed.other_chains == {"XBT": 1, "USDT": 1} and parsed.errors == []
    assert "1 XBT address(es) of other chains left out" in parsed.notes()


def test_sdn_classic_xml_is_read_too():
    parsed = parse_list(SDN_CLASSIC, name="sdn.xml")
    assert (parsed.format, parsed.published_at) == ("sdn_xml", datetime(2026, 11, 27, tzinfo=timezone.utc))
    assert {a: (e.sdn_uid, e.sdn_name) for a, e in parsed.entries.items()} == {
        LAZARUS: (91001, "LAZARUS GROUP"), "0x7f367cc41522ce07553e823bf3be79a889debe1b": (91006, "Example PERSON")}
    assert parsed.other_chains == {"XBT": 1, "TRX": 1}


def test_derived_address_list_takes_its_asset_from_its_name_and_keeps_mixed_case_as_published():
    parsed = parse_list(ETH_LIST, name="https://example.org/lists/sanctioned_addresses_ETH.txt")
    assert (parsed.format, parsed.list_key, parsed.published_at) == ("address_list", "ofac-ETH", None)
    assert sorted(parsed.entries) == sorted(a.lower() for a in _lines(ETH_LIST))
    assert asset_from_name("sanctioned_addresses_USDT.json") == "USDT"


def test_derived_json_list_and_comments_and_blank_lines_are_read():
    json_list = ('["' + '", "'.join(_lines(ETH_LIST)) + '"]').encode()
    assert len(parse_list(json_list, name="sanctioned_addresses_ETH.json").entries) == 10
    commented = b"# OFAC SDN, ETH\n\n" + ETH_LIST
    assert len(parse_list(commented, name="list.txt", asset="eth").entries) == 10


@pytest.mark.parametrize("data, name, message", [
    (SDN_ADVANCED[:2000], "sdn_advanced.xml", "not well-formed XML"),
    (b"<html><body>Access denied</body></html>", "sdn_advanced.xml", "root is <html>"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><Sanctions/>', "sdn.xml", "DOCTYPE"),
    (ETH_LIST, "addresses.txt", "say which asset"),
    (b"\n# nothing listed\n", "sanctioned_addresses_ETH.txt", "lists no EVM address"),
    (b"\xff\xfe0x00", "sanctioned_addresses_ETH.txt", "not UTF-8"),
])
def test_a_file_that_is_not_a_sanctions_list_is_refused_by_name(data, name, message):
    with pytest.raises(ListFormatError, match=message):
        parse_list(data, name=name)


def test_a_value_that_is_not_an_address_is_an_error_naming_where_it_is():
    broken = SDN_ADVANCED.replace(b"0xa0e1c89Ef1a489c9C7dE96311eD5Ce5D32c20E4B",
                                  b"0xa0e1c89Ef1a489c9C7dE96311eD5Ce5D32c20E4")
    parsed = parse_list(broken, name="sdn_advanced.xml")
    assert parsed.errors == ["SDN 91001 (LAZARUS GROUP), Digital Currency Address - ETH: "
                             "'0xa0e1c89Ef1a489c9C7dE96311eD5Ce5D32c20E4' is not an EVM address (0x and 40 hex "
                             "digits)."]
    bsc_not_evm = SDN_ADVANCED.replace(b"0x4736dCf1b7A3d580672CcE6E7c65cd5cc9cFBa9D", b"bnb1notanevmaddress")
    assert "is not an EVM address" in parse_list(bsc_not_evm, name="x.xml").errors[0], "BSC is EVM-only"


def test_a_wrong_checksum_is_kept_lower_cased_with_a_warning():
    typo = ETH_LIST.replace(b"0x098B716B8Aaf21512996dC57EB0615e2383E2f96",
                            b"0x098b716B8Aaf21512996dC57EB0615e2383E2f96")
    parsed = parse_list(typo, name="sanctioned_addresses_ETH.txt")
    assert LAZARUS in parsed.entries and parsed.errors == []
    assert parsed.warnings == [f"line 1: 0x098b716B8Aaf21512996dC57EB0615e2383E2f96 has a wrong EIP-55 checksum; "
                               f"kept as {LAZARUS}."]


# ---------------------------------------------------------------------------- importing versions


@pytest.mark.django_db
def test_import_keeps_a_version_with_source_date_sha_and_entries_audited():
    version = _import(SDN_ADVANCED, source="https://sanctionslistservice.ofac.treas.gov/SDN_ADVANCED.XML")

    assert (version.list_key, version.format, version.entry_count) == ("ofac-sdn", "sdn_advanced_xml", 7)
    assert version.sha256 == hashlib.sha256(SDN_ADVANCED).hexdigest()
    assert version.published_at == datetime(2026, 11, 27, tzinfo=timezone.utc)
    assert (version.added_count, version.removed_count, version.previous) == (7, 0, None)
    entry = SanctionsEntry.objects.get(version=version, address=LAZARUS)
    assert (entry.sdn_uid, entry.sdn_name, entry.assets) == (91001, "LAZARUS GROUP", ["ETH"])
    audit = AuditLog.objects.get(action="import_sanctions_list")
    assert audit.object_id == str(version.pk) and audit.after["entries"] == 7 and audit.actor_label == ACTOR


@pytest.mark.django_db
def test_next_version_is_compared_with_the_previous_one_of_the_same_list():
    first = _import(ETH_LIST)
    other_list = _import(SDN_ADVANCED, source="sdn_advanced.xml")
    lines = _lines(ETH_LIST)
    second = _import(("\n".join(lines[1:] + ["0x" + "ab" * 20]) + "\n").encode())

    assert second.previous == first and other_list.previous is None, "each list has its own versions"
    assert (second.entry_count, second.added_count, second.removed_count) == (10, 1, 1)
    assert SanctionsListVersion.objects.count() == 3, "every version is kept"


@pytest.mark.django_db
def test_import_refuses_a_malformed_file_and_writes_nothing():
    with pytest.raises(ValidationError) as exc:
        _import(SDN_ADVANCED[:3000], source="sdn_advanced.xml")
    assert "not well-formed XML" in exc.value.message_dict["file"][0]
    assert not SanctionsListVersion.objects.exists() and not AuditLog.objects.exists()


@pytest.mark.django_db
def test_import_refuses_an_address_that_is_not_one_unless_forced_with_a_reason():
    bad = ETH_LIST + b"0x1234\n"
    with pytest.raises(ValidationError) as exc:
        _import(bad)
    assert exc.value.messages[0] == "line 11: '0x1234' is not an EVM address (0x and 40 hex digits)."
    assert "force the import (skipping them) with a reason" in exc.value.messages[-1]
    with pytest.raises(ValidationError, match="A forced import needs a reason"):
        _import(bad, force=True)
    assert not SanctionsListVersion.objects.exists()

    version = _import(bad, force=True, force_reason="OFAC's own typo, reported to them")
    assert version.forced and version.entry_count == 10
    assert "skipped (forced): line 11: '0x1234' is not an EVM address (0x and 40 hex digits)." in version.notes
    assert AuditLog.objects.get(action="import_sanctions_list").reason == "OFAC's own typo, reported to them"


@pytest.mark.django_db
def test_import_refuses_a_version_dropping_more_than_a_fifth_unless_forced():
    first = _import(ETH_LIST)
    lines = _lines(ETH_LIST)
    with pytest.raises(ValidationError) as exc:
        _import(("\n".join(lines[:7]) + "\n").encode())  # 3 of 10 gone: a truncated download?
    assert exc.value.message_dict["file"] == [
        f"sanctioned_addresses_ETH.txt holds 7 addresses where ofac-ETH version #{first.pk} held 10: it drops 3, "
        "more than a fifth (a truncated download?). Nothing was imported; check the file, and force the import with "
        "a reason if the list really shrank."]
    assert SanctionsListVersion.objects.count() == 1
    assert _import(("\n".join(lines[:8]) + "\n").encode()).entry_count == 8, "a fifth exactly is fine"
    forced = _import(("\n".join(lines[:3]) + "\n").encode(), force=True, force_reason="OFAC delisted seven")
    assert (forced.entry_count, forced.removed_count, forced.forced) == (3, 5, True)


@pytest.mark.django_db
def test_import_refuses_the_same_file_twice():
    first = _import(ETH_LIST)
    with pytest.raises(ValidationError) as exc:
        _import(ETH_LIST)
    assert exc.value.error_dict["file"][0].code == "duplicate"
    assert f"is the same file as ofac-ETH version #{first.pk}" in exc.value.messages[0]
    assert SanctionsListVersion.objects.count() == 1


@pytest.mark.django_db
def test_import_needs_the_blacklist_permission(django_user_model):
    from django.core.exceptions import PermissionDenied

    viewer = django_user_model.objects.create_user("vera", is_staff=True)
    with pytest.raises(PermissionDenied):
        import_sanctions_list(actor=viewer, data=ETH_LIST, source="sanctioned_addresses_ETH.txt")


@pytest.mark.django_db
def test_command_imports_a_file_and_reports_the_version(tmp_path):
    path = tmp_path / "sanctioned_addresses_ETH.txt"
    path.write_bytes(ETH_LIST)
    out = io.StringIO()
    call_command("import_sanctions_list", str(path), stdout=out)
    version = SanctionsListVersion.objects.get()
    assert f"ofac-ETH version #{version.pk}: 10 addresses (+10 −0), SHA-256 {version.sha256}; 0 of our wallet(s) hit." \
        in out.getvalue()
    with pytest.raises(CommandError, match="Nothing was imported: .* is the same file"):
        call_command("import_sanctions_list", str(path))
    with pytest.raises(CommandError, match="no such file"):
        call_command("import_sanctions_list", str(tmp_path / "missing.txt"))
