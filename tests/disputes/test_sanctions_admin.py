"""Where staff see sanctions screening: the Sanctions page (lists, oracles, queue, versions), a version's report with
its hits and who handled them, the import form, "mark handled", and the hits on the dispute review, the arbitrator
monitoring page and the wallet's profile."""
from __future__ import annotations

from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from backoffice.audit.models import AuditLog
from chain.models import OrderStatus
from disputes.models import ReviewFlag, SanctionsHit, SanctionsListVersion
from disputes.sanctions.services import import_sanctions_list
from tests import factories as f

from .builders import disputed_order

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
ETH_LIST = (DATA / "sanctioned_addresses_ETH.txt").read_bytes()
SANCTIONS = "/admin/disputes/sanctionslistversion/"
IMPORT = SANCTIONS + "import/"
HITS = "/admin/disputes/sanctionshit/"


def _listing(*wallets: str) -> SanctionsListVersion:
    data = ETH_LIST + "".join(f"{w}\n" for w in wallets).encode()
    return import_sanctions_list(actor="system:test", data=data, source="sanctioned_addresses_ETH.txt")


def test_sanctions_page_shows_the_oracles_the_queue_and_the_versions_to_every_role(login, viewer, no_chain):
    version = _listing(f.profile().wallet)
    page = login(viewer).get(SANCTIONS)
    assert page.status_code == 200
    text = page.content.decode()
    assert "1 hit(s) not handled" in text and "none configured (lists only)" in text
    assert f">#{version.pk}<" in text and "+11 −0" in text
    assert "Import a list…" not in text, "importing is the blacklist managers'"


def test_import_form_imports_a_version_and_shows_its_report(login, manager, no_chain):
    ours = f.profile()
    order = f.order(buyer=ours, status=OrderStatus.FUNDED, amount="42")
    upload = SimpleUploadedFile("sanctioned_addresses_ETH.txt", ETH_LIST + f"{ours.wallet}\n".encode())
    response = login(manager).post(IMPORT, {"file": upload})

    version = SanctionsListVersion.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "admin:disputes_sanctionslistversion_change", args=[version.pk])
    report = login(manager).get(response["Location"]).content.decode()
    assert f"<code>{ours.wallet}</code>" in report and f"bsc #{order.onchain_id} (buyer, funded, 42 USDT)" in report
    assert "1 of our wallets hit" in report and "not yet" in report
    assert AuditLog.objects.get(action="import_sanctions_list").actor_label == manager.get_username()


def test_import_form_refusal_names_the_problem_and_writes_nothing(login, manager, viewer):
    response = login(manager).post(IMPORT, {"file": SimpleUploadedFile("sdn_advanced.xml", b"<Sanctions><Dist")})
    assert response.status_code == 200 and "not well-formed XML" in response.content.decode()
    assert not SanctionsListVersion.objects.exists()
    assert login(viewer).get(IMPORT).status_code == 403


def test_a_reviewer_marks_a_hit_handled_and_the_report_says_who(login, reviewer, viewer):
    version = _listing(f.profile().wallet)
    hit = SanctionsHit.objects.get()
    client = login(reviewer)
    confirm = client.post(HITS, {"action": "handle_selected", "_selected_action": [hit.pk]})
    assert confirm.status_code == 200 and "Mark handled" in confirm.content.decode()
    client.post(HITS, {"action": "handle_selected", "_selected_action": [hit.pk], "confirm": "1",
                       "resolution": "no open order; reported to compliance"})

    flag = ReviewFlag.objects.get(pk=hit.flag_id)
    assert flag.resolved_by == reviewer and flag.resolution == "no open order; reported to compliance"
    assert AuditLog.objects.filter(action="resolve_review_flag", object_id=str(flag.pk)).exists()
    report = client.get(reverse("admin:disputes_sanctionslistversion_change", args=[version.pk])).content.decode()
    assert f"{reviewer.get_username()}," in report and "reported to compliance" in report
    # Viewers see the hits but the action is not theirs.
    refused = login(viewer).post(HITS, {"action": "handle_selected", "_selected_action": [hit.pk], "confirm": "1",
                                        "resolution": "x"})
    assert refused.status_code in (200, 403) and ReviewFlag.objects.get(pk=flag.pk).resolved_by == reviewer


def test_dispute_review_shows_a_sanctioned_party(login, viewer):
    order = disputed_order()
    _listing(order.seller_id)
    page = login(viewer).get(reverse("admin:disputes_disputedorder_review", args=[order.pk])).content.decode()
    assert "Sanctions hit" in page and f"The seller <code>{order.seller_id}</code> is named by" in page


def test_arbitrator_monitoring_flags_a_sanctioned_arbitrator(login, viewer):
    arbitrator = f.arbitrator(reputation=70)
    _listing(arbitrator.wallet)
    page = login(viewer).get(reverse("admin:disputes_disputedorder_arbitrators")).content.decode()
    assert "Sanctioned (named by a sanctions list or oracle)" in page
    assert page.count(arbitrator.wallet) >= 2 and "SANCTIONED" in page


def test_arbitrator_monitoring_flags_a_trader_hit_before_registering_as_an_arbitrator(login, viewer, no_chain):
    from disputes.sanctions.services import screen_new_wallets

    trader = f.profile()
    _listing(trader.wallet)
    arbitrator = f.arbitrator(address=trader.wallet, reputation=70)  # met again: screened, not hit a second time
    screen_new_wallets()
    assert "arbitrator" not in SanctionsHit.objects.get().roles, "its hit says what it was when hit"
    page = login(viewer).get(reverse("admin:disputes_disputedorder_arbitrators")).content.decode()
    assert "Sanctioned (named by a sanctions list or oracle)" in page
    assert page.count(arbitrator.wallet) >= 2 and "SANCTIONED" in page


def test_wallet_profile_shows_its_screening_and_hits(login, viewer, no_chain):
    from disputes.sanctions.services import screen_new_wallets

    clean, listed = f.profile(), f.profile()
    _listing(listed.wallet)
    screen_new_wallets()
    client = login(viewer)
    clean_page = client.get(reverse("admin:chain_userprofile_change", args=[clean.pk])).content.decode()
    assert "screened" in clean_page and "against the lists: not named." in clean_page
    listed_page = client.get(reverse("admin:chain_userprofile_change", args=[listed.wallet])).content.decode()
    assert "SANCTIONS HIT" in listed_page and "sanctions list ofac-ETH" not in listed_page
    assert "list ofac-ETH #" in listed_page and "not handled yet" in listed_page
