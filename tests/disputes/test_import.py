"""Blacklist CSV import (preview, then a signed confirm; every row or none) and CSV export."""
from __future__ import annotations

import csv
import io
import re

import pytest
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from backoffice.audit.models import AuditLog
from chain.addresses import checksum
from disputes.imports import parse_blacklist_csv
from disputes.models import Blacklist
from disputes.services import import_blacklist
from tests import factories as f

from .builders import ago

pytestmark = pytest.mark.django_db

IMPORT = "/admin/disputes/blacklist/import/"
A, B, C = f.wallet(0x1001), f.wallet(0x1002), f.wallet(0x1003)
CHECKSUMMED = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
BAD_CHECKSUM = "0xdac17F958D2ee523a2206206994597C13D831ec7"
FUTURE = (ago(days=-30)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _upload(client, content: bytes):
    return client.post(IMPORT, {"file": SimpleUploadedFile("blacklist.csv", content, content_type="text/csv")})


def _good_file() -> bytes:
    return ("\ufeffwallet,reason,source,expires_at\n"  # Excel's byte-order mark is fine
            f"{A},Chargeback fraud,manual,\n"
            f"{CHECKSUMMED},Sanctions list,import,{FUTURE}\n"
            f"{C},RB-04 repeat seller,automatic,\n").encode()


def test_import_previews_then_confirm_imports_every_row_audited(login, manager):
    profile = f.profile(CHECKSUMMED.lower())
    client = login(manager)

    preview = _upload(client, _good_file())
    assert preview.status_code == 200
    parsed = preview.context["parsed"]
    assert parsed.ok and [(r.line, r.wallet, r.source) for r in parsed.rows] == [
        (2, A, "manual"), (3, CHECKSUMMED.lower(), "import"), (4, C, "automatic")]
    assert "Import 3 entries" in preview.content.decode()
    # a preview writes nothing
    assert not Blacklist.objects.exists() and not AuditLog.objects.exclude(object_type="auth").exists()

    done = client.post(IMPORT, {"payload": preview.context["payload"]})
    assert done.status_code == 302 and done["Location"] == reverse("admin:disputes_blacklist_changelist")
    entries = {e.wallet: e for e in Blacklist.objects.all()}
    assert set(entries) == {A, CHECKSUMMED.lower(), C}
    assert entries[CHECKSUMMED.lower()].expires_at is not None and entries[A].expires_at is None
    assert {e.created_by for e in entries.values()} == {manager}
    assert AuditLog.objects.filter(action="blacklist_wallet", actor=manager).count() == 3
    profile.refresh_from_db()
    assert profile.is_blacklisted


def test_import_confirm_refuses_altered_payload_and_writes_nothing(login, manager):
    client = login(manager)
    payload = _upload(client, _good_file()).context["payload"]
    response = client.post(IMPORT, {"payload": payload[:-3] + "abc"})
    assert "The preview expired or was altered" in response.content.decode()
    assert not Blacklist.objects.exists()


def test_import_confirm_revalidates_and_writes_nothing_when_a_row_was_blacklisted_since_preview(login, manager):
    client = login(manager)
    payload = _upload(client, _good_file()).context["payload"]
    Blacklist.objects.create(wallet=C, reason="meanwhile, by raw SQL")
    response = client.post(IMPORT, {"payload": payload})
    assert response.status_code == 200
    assert f"Nothing was imported: line 4: {C} is already blacklisted" in response.content.decode()
    assert list(Blacklist.objects.values_list("wallet", flat=True)) == [C]
    assert not AuditLog.objects.exclude(object_type="auth").exists()


HEADER = "wallet,reason,source,expires_at\n"


@pytest.mark.parametrize(("content", "error"), [
    pytest.param(f"{HEADER}{A},ok,manual,\n0x1234,bad,manual,\n", "line 3: wallet: '0x1234' is not an EVM address",
                 id="bad-address"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{BAD_CHECKSUM},bad,manual,\n", "line 3: wallet: " + BAD_CHECKSUM +
                 " has a wrong EIP-55 checksum", id="bad-checksum"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},bad,robot,\n", "line 3: unknown source 'robot'", id="unknown-source"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{checksum(A)},again,manual,\n", f"line 3: {A} is also on line 2 "
                 "(duplicate)", id="duplicate-in-file"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},x,manual,2020-01-01T00:00:00Z\n", "line 3: expires_at is in the past",
                 id="past-expiry"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},x,manual,next tuesday\n", "line 3: expires_at 'next tuesday' is not",
                 id="bad-expiry"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},x,manual,2030-02-30T00:00:00Z\n", "line 3: expires_at '2030-02-30",
                 id="impossible-expiry"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},,manual,\n", "line 3: reason is empty", id="empty-reason"),
    pytest.param(f"{HEADER}{A},ok,manual,\n{B},x,manual,,extra\n", "line 3: too many cells", id="too-many-cells"),
    pytest.param(f"wallet,reason\n{A},ok\n", "line 1: missing column(s) source", id="missing-column"),
    pytest.param(f"{HEADER}{A},ok,manual,,\n".replace("expires_at", "expires_at,colour"),
                 "line 1: unknown column(s) colour", id="unknown-column"),
    pytest.param(HEADER, "The file has no rows", id="empty"),
])
def test_import_rejects_whole_file_naming_line_and_reason(login, manager, content, error):
    response = _upload(login(manager), content.encode())
    parsed = response.context["parsed"]
    assert not parsed.ok
    assert any(e.startswith(error) for e in parsed.errors), parsed.errors
    assert "payload" not in response.context and 'name="payload"' not in response.content.decode()
    assert "nothing was imported" in response.content.decode()
    with pytest.raises(ValidationError):
        import_blacklist(actor=manager, data=content)
    assert not Blacklist.objects.exists() and not AuditLog.objects.exclude(object_type="auth").exists()


def test_import_rejects_wallet_already_active_in_blacklist(login, manager):
    Blacklist.objects.create(wallet=B, reason="earlier")
    response = _upload(login(manager), f"{HEADER}{A},ok,manual,\n{B},again,manual,\n".encode())
    assert response.context["parsed"].errors == [f"line 3: {B} is already blacklisted (duplicate)."]
    assert Blacklist.objects.count() == 1


def test_import_rejects_file_not_utf8_naming_the_line(login, manager):
    content = f"{HEADER}{A},ok,manual,\n".encode() + f"{B},Mu".encode() + b"\xfcller,manual,\n"
    response = _upload(login(manager), content)
    assert response.context["parsed"].errors == ["line 3: the file is not UTF-8 text: export it as CSV (UTF-8)."]
    assert parse_blacklist_csv(b"\xef\xbb\xbf" + content).errors[0].startswith("line 3:")
    assert not Blacklist.objects.exists()


def test_import_lists_every_bad_row_in_line_order():
    content = f"{HEADER}0xzz,a,manual,\n{A},ok,manual,\n{B},b,robot,\n{A},dup,manual,\n"
    errors = parse_blacklist_csv(content).errors
    assert [int(re.match(r"line (\d+):", e).group(1)) for e in errors] == [2, 4, 5]


def test_blacklist_csv_export_of_selected_entries(staff_client, staff_user):
    first = Blacklist.objects.create(wallet=A, reason="=HYPERLINK(evil)", source="import",
                                     expires_at=ago(days=-10))
    second = Blacklist.objects.create(wallet=B, reason="plain")
    second.lifted_at, second.lift_reason = ago(hours=1), "appeal"
    second.save()

    response = staff_client.post("/admin/disputes/blacklist/", {
        "action": "export_csv", "_selected_action": [first.pk, second.pk], "index": 0})
    assert response.status_code == 200 and response["Content-Disposition"] == 'attachment; filename="blacklist.csv"'
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["wallet", "reason", "source", "created_at", "expires_at", "order_id", "lifted_at",
                       "lift_reason"]
    by_wallet = {r[0]: r for r in rows[1:]}
    assert by_wallet[A][1:3] == ["'=HYPERLINK(evil)", "import"]  # no formula injection into spreadsheets
    assert by_wallet[A][4].startswith(str((ago(days=-10)).year)) and by_wallet[A][6] == ""
    assert by_wallet[B][6] != "" and by_wallet[B][7] == "appeal"
