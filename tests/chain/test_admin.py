"""The staff admin: every page renders with its data, exact search, links between objects, read-only mirrors."""
from __future__ import annotations

import csv
import io
import re
from datetime import datetime, timezone

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.urls import reverse

from backoffice.audit.models import AuditLog
from chain.models import Arbitrator, EventSyncCursor, Order, OrderStatus, UserProfile
from disputes.models import Blacklist
from disputes.services import blacklist_wallet
from tests import factories as f

pytestmark = pytest.mark.django_db

CHECKSUMMED = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
LOWER = CHECKSUMMED.lower()


def _url(model, action: str = "changelist", *args) -> str:
    meta = model._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{action}", args=args)


def _order_ids(response) -> set[int]:
    """Orders listed on a changelist page (each row links to its change page)."""
    return {int(pk) for pk in re.findall(r'/admin/chain/order/(\d+)/change/', response.content.decode())}


@pytest.fixture
def market(staff_user):
    """Two buyers, one seller, an arbitrator with a case, a cursor, a blacklisting and its audit row."""
    buyer = f.profile(LOWER, display_name="Buyer One")
    other = f.profile(display_name="Buyer Two")
    seller = f.profile(display_name="Seller")
    arb = f.arbitrator(chain="bsc", reputation=15)
    o1 = f.order(buyer=buyer, seller=seller, onchain_id=101, amount="250.5")
    o2 = f.order(buyer=other, seller=seller, onchain_id=102, status=OrderStatus.DISPUTED,
                 arbitrator_wallet=arb.wallet, disputed_at=datetime.now(timezone.utc),
                 evidence_cids=["bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"])
    o3 = f.order(buyer=buyer, seller=other, onchain_id=103, chain="ethereum")
    EventSyncCursor.objects.create(chain="bsc", last_block=123456, head_block=123460)
    entry = blacklist_wallet(actor=staff_user, wallet=other.wallet, reason="High dispute rate")
    return {"buyer": buyer, "other": other, "seller": seller, "arb": arb, "orders": (o1, o2, o3), "entry": entry}


# ---------------------------------------------------------------- every page renders with data


@pytest.mark.parametrize(("model", "needle"), [
    (Order, "#101"),
    (UserProfile, LOWER),
    (Arbitrator, "15"),
    (EventSyncCursor, "123456"),
    (Blacklist, "High dispute rate"),
    (AuditLog, "blacklist_wallet"),
])
def test_admin_changelist_renders_with_data(staff_client, market, model, needle):
    response = staff_client.get(_url(model))
    assert response.status_code == 200
    assert needle in response.content.decode()


def test_admin_change_pages_render_with_data(staff_client, market):
    o1, o2, _ = market["orders"]
    pages = [
        (_url(Order, "change", o2.pk), ["bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", o2.last_tx_hash,
                                        market["arb"].wallet]),
        (_url(UserProfile, "change", market["buyer"].pk), [LOWER, "Buyer One"]),
        (_url(Arbitrator, "change", market["arb"].pk), [market["arb"].wallet]),
        (_url(EventSyncCursor, "change", "bsc"), ["123456", "123460"]),
        (_url(Blacklist, "change", market["entry"].pk), [market["other"].wallet, "High dispute rate"]),
        (_url(AuditLog, "change", AuditLog.objects.get(action="blacklist_wallet").pk),
         ["blacklist_wallet", "High dispute rate"]),
    ]
    for url, needles in pages:
        response = staff_client.get(url)
        assert response.status_code == 200, url
        body = response.content.decode()
        for needle in needles:
            assert needle in body, (url, needle)


def test_admin_order_changelist_filters_by_status(staff_client, market):
    response = staff_client.get(_url(Order), {"status__exact": "disputed"})
    assert _order_ids(response) == {market["orders"][1].pk}


# ---------------------------------------------------------------- exact search


@pytest.mark.parametrize("term", [LOWER, CHECKSUMMED, "0x" + LOWER[2:].upper(), f"  {LOWER} "])
def test_admin_order_search_by_buyer_wallet_in_any_case(staff_client, market, term):
    o1, _, o3 = market["orders"]
    response = staff_client.get(_url(Order), {"q": term})
    assert response.status_code == 200
    assert _order_ids(response) == {o1.pk, o3.pk}


def test_admin_order_search_by_onchain_id_and_tx_hashes(staff_client, market):
    o1, o2, o3 = market["orders"]
    assert _order_ids(staff_client.get(_url(Order), {"q": "102"})) == {o2.pk}
    assert _order_ids(staff_client.get(_url(Order), {"q": o1.created_tx_hash.upper().replace("0X", "0x")})) == {o1.pk}
    assert _order_ids(staff_client.get(_url(Order), {"q": o3.last_tx_hash})) == {o3.pk}
    assert _order_ids(staff_client.get(_url(Order), {"q": "999"})) == set()
    assert _order_ids(staff_client.get(_url(Order), {"q": "USDT"})) == set()


def test_admin_order_search_by_arbitrator_wallet(staff_client, market):
    assert _order_ids(staff_client.get(_url(Order), {"q": market["arb"].wallet})) == {market["orders"][1].pk}


@pytest.mark.parametrize("term", ["²", "١٢", "9" * 30, "0x", "' OR 1=1 --"])
def test_admin_order_search_with_odd_terms_finds_nothing_without_error(staff_client, market, term):
    response = staff_client.get(_url(Order), {"q": term})
    assert response.status_code == 200
    assert _order_ids(response) == set()


def test_admin_profile_search_by_wallet_and_name(staff_client, market):
    response = staff_client.get(_url(UserProfile), {"q": CHECKSUMMED})
    assert f'/admin/chain/userprofile/{market["buyer"].pk}/change/' in response.content.decode()
    assert f'/admin/chain/userprofile/{market["seller"].pk}/change/' not in response.content.decode()
    response = staff_client.get(_url(UserProfile), {"q": "buyer t"})
    assert f'/admin/chain/userprofile/{market["other"].pk}/change/' in response.content.decode()
    assert f'/admin/chain/userprofile/{market["buyer"].pk}/change/' not in response.content.decode()


# ---------------------------------------------------------------- links between objects


def test_admin_order_page_links_to_buyer_and_seller_profiles(staff_client, market):
    o1 = market["orders"][0]
    body = staff_client.get(_url(Order, "change", o1.pk)).content.decode()
    assert _url(UserProfile, "change", market["buyer"].pk) in body
    assert _url(UserProfile, "change", market["seller"].pk) in body


def test_admin_order_page_links_to_arbitrator(staff_client, market):
    body = staff_client.get(_url(Order, "change", market["orders"][1].pk)).content.decode()
    assert _url(Arbitrator, "change", market["arb"].pk) in body


def _links(body: str, text: str) -> list[str]:
    return [href.replace("&amp;", "&") for href in re.findall(rf'<a href="([^"]+)">{text}</a>', body)]


@pytest.mark.parametrize(("text", "expected"), [("as buyer", {0, 2}), ("as seller", set()), ("all", {0, 2})])
def test_admin_profile_page_links_to_its_orders(staff_client, market, text, expected):
    body = staff_client.get(_url(UserProfile, "change", market["buyer"].pk)).content.decode()
    (href,) = _links(body, text)
    response = staff_client.get(href)
    assert response.status_code == 200, href  # not a redirect to ?e=1 (a refused lookup)
    assert _order_ids(response) == {market["orders"][i].pk for i in expected}


def test_admin_seller_profile_link_lists_sold_orders(staff_client, market):
    body = staff_client.get(_url(UserProfile, "change", market["seller"].pk)).content.decode()
    (href,) = _links(body, "as seller")
    response = staff_client.get(href)
    assert response.status_code == 200
    assert _order_ids(response) == {market["orders"][0].pk, market["orders"][1].pk}


def test_admin_arbitrator_cases_link_lists_its_orders(staff_client, market):
    f.arbitrator(chain="ethereum", address=market["arb"].wallet)
    body = staff_client.get(_url(Arbitrator)).content.decode()
    hrefs = _links(body, "cases")
    assert len(hrefs) == 2
    bsc = next(h for h in hrefs if "chain__exact=bsc" in h)
    response = staff_client.get(bsc)
    assert response.status_code == 200
    assert _order_ids(response) == {market["orders"][1].pk}


def test_admin_blacklist_links_to_profile(staff_client, market):
    body = staff_client.get(_url(Blacklist)).content.decode()
    assert _url(UserProfile, "change", market["other"].pk) in body


# ---------------------------------------------------------------- chain data is read-only


@pytest.mark.parametrize("model", [Order, UserProfile, Arbitrator, EventSyncCursor])
def test_admin_chain_mirror_has_no_add(staff_client, market, model):
    assert staff_client.get(_url(model, "add")).status_code == 403
    assert f'href="{_url(model, "add")}"' not in staff_client.get(_url(model)).content.decode()


def test_admin_chain_mirror_refuses_change_and_delete(staff_client, market):
    o1 = market["orders"][0]
    response = staff_client.post(_url(Order, "change", o1.pk), {"status": "cancelled", "amount": "1"})
    assert response.status_code == 403
    assert staff_client.post(_url(Order, "delete", o1.pk), {"post": "yes"}).status_code == 403
    profile = market["buyer"]
    assert staff_client.post(_url(UserProfile, "change", profile.pk), {"display_name": "x"}).status_code == 403
    assert staff_client.post(_url(UserProfile, "delete", profile.pk), {"post": "yes"}).status_code == 403
    o1.refresh_from_db()
    profile.refresh_from_db()
    assert (o1.status, profile.display_name) == ("completed", "Buyer One")
    assert Order.objects.count() == 3


def test_admin_chain_mirror_bulk_delete_action_is_absent(staff_client, market):
    o1 = market["orders"][0]
    response = staff_client.post(_url(Order), {"action": "delete_selected", ACTION_CHECKBOX_NAME: [o1.pk],
                                               "index": 0})
    assert Order.objects.filter(pk=o1.pk).exists()
    assert response.status_code in (200, 302)


def test_admin_order_csv_export_lists_selected_rows(staff_client, market):
    o1, o2, o3 = market["orders"]
    response = staff_client.post(_url(Order), {"action": "export_csv", ACTION_CHECKBOX_NAME: [o1.pk, o2.pk],
                                               "index": 0})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].startswith("chain,onchain_id,status,amount")
    assert sorted(line.split(",")[1] for line in lines[1:]) == ["101", "102"]
    assert o1.created_tx_hash in "\n".join(lines)


# ---------------------------------------------------------------- the blacklist admin runs the service


def test_admin_blacklist_add_creates_entry_through_the_service(staff_client, staff_user):
    profile = f.profile(LOWER)
    response = staff_client.post(_url(Blacklist, "add"), {"wallet": CHECKSUMMED, "reason": "Scam reports",
                                                          "source": "manual", "expires_at_0": "", "expires_at_1": "",
                                                          "order": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    entry = Blacklist.objects.get()
    assert (entry.wallet, entry.reason, entry.created_by) == (LOWER, "Scam reports", staff_user)
    audit = AuditLog.objects.exclude(object_type="auth").get()
    assert (audit.action, audit.actor, audit.object_id) == ("blacklist_wallet", staff_user, str(entry.pk))
    profile.refresh_from_db()
    assert profile.is_blacklisted


@pytest.mark.parametrize(("data", "field"), [
    ({"wallet": "0x1234"}, "wallet"),
    ({"wallet": "0xdac17F958D2ee523a2206206994597C13D831ec7"}, "wallet"),
    ({"reason": "  "}, "reason"),
])
def test_admin_blacklist_add_shows_field_error_and_writes_nothing(staff_client, data, field):
    response = staff_client.post(_url(Blacklist, "add"), {"wallet": LOWER, "reason": "Scam", "source": "manual",
                                                          **data})
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    assert "errorlist" in response.content.decode()
    assert not Blacklist.objects.exists()
    assert not AuditLog.objects.exclude(object_type="auth").exists()


def test_admin_blacklist_lift_action_confirms_then_lifts_with_reason(staff_client, staff_user, market):
    entry = market["entry"]
    data = {"action": "lift_selected", ACTION_CHECKBOX_NAME: [entry.pk], "index": 0}
    response = staff_client.post(_url(Blacklist), data)
    assert response.status_code == 200
    assert "Lift 1 blacklisting(s)" in response.content.decode()
    entry.refresh_from_db()
    assert entry.lifted_at is None  # nothing happens before the confirmation

    # Confirming without a reason shows the form again.
    response = staff_client.post(_url(Blacklist), {"action": "lift_selected", ACTION_CHECKBOX_NAME: [entry.pk],
                                                   "confirm": "yes", "reason": " "})
    assert response.status_code == 200
    entry.refresh_from_db()
    assert entry.lifted_at is None

    response = staff_client.post(_url(Blacklist), {"action": "lift_selected", ACTION_CHECKBOX_NAME: [entry.pk],
                                                   "confirm": "yes", "reason": "Appeal accepted"})
    assert response.status_code == 302
    entry.refresh_from_db()
    assert entry.lifted_at is not None and entry.lift_reason == "Appeal accepted" and entry.lifted_by == staff_user
    assert not UserProfile.objects.get(wallet=entry.wallet).is_blacklisted
    assert AuditLog.objects.filter(action="lift_blacklist_entry", object_id=str(entry.pk)).count() == 1


def test_admin_blacklist_csv_export(staff_client, market):
    entry = market["entry"]
    response = staff_client.post(_url(Blacklist), {"action": "export_csv", ACTION_CHECKBOX_NAME: [entry.pk],
                                                   "index": 0})
    assert response.status_code == 200
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines[0].split(",")[:2] == ["wallet", "reason"]
    assert lines[1].startswith(f"{entry.wallet},High dispute rate,manual")


@pytest.mark.parametrize("reason", ["=HYPERLINK(\"http://evil\")", "@SUM(A1)", "\t=1+1", "-2+3"])
def test_admin_blacklist_csv_export_defuses_formulas(staff_client, staff_user, reason):
    entry = blacklist_wallet(actor=staff_user, wallet=LOWER, reason="placeholder")
    with connection.cursor() as cur:  # the service strips the reason; a raw write keeps the leading tab
        cur.execute("UPDATE blacklist SET reason = %s WHERE id = %s", [reason, entry.pk])
    response = staff_client.post(_url(Blacklist), {"action": "export_csv", ACTION_CHECKBOX_NAME: [entry.pk],
                                                   "index": 0})
    (row,) = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))[1:]
    assert row[1] == "'" + reason


def test_admin_blacklist_has_no_delete(staff_client, market):
    entry = market["entry"]
    assert staff_client.post(_url(Blacklist, "delete", entry.pk), {"post": "yes"}).status_code == 403
    assert Blacklist.objects.filter(pk=entry.pk).exists()


# ---------------------------------------------------------------- the audit log admin


def test_admin_audit_log_allows_no_add_change_or_delete_for_superuser(staff_client, market):
    row = AuditLog.objects.exclude(object_type="auth").get()
    assert staff_client.get(_url(AuditLog, "add")).status_code == 403
    assert staff_client.post(_url(AuditLog, "change", row.pk), {"reason": "edited"}).status_code == 403
    assert staff_client.post(_url(AuditLog, "delete", row.pk), {"post": "yes"}).status_code == 403
    row.refresh_from_db()
    assert row.reason == "High dispute rate"


def test_admin_audit_log_csv_export(staff_client, market):
    row = AuditLog.objects.exclude(object_type="auth").get()
    response = staff_client.post(_url(AuditLog), {"action": "export_csv", ACTION_CHECKBOX_NAME: [row.pk],
                                                  "index": 0})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert row.row_hash in body and "blacklist_wallet" in body


def test_admin_requires_staff_login(client):
    response = client.get(_url(Order))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_admin_order_and_dispute_lists_sort_by_each_sortable_column(staff_client, market):
    for url, columns in (("/admin/chain/order/", 9), ("/admin/disputes/disputedorder/", 10)):
        for index in range(1, columns + 1):
            for sign in ("", "-"):
                response = staff_client.get(f"{url}?o={sign}{index}")
                assert response.status_code == 200, (url, index)


def test_order_page_shows_amounts_with_their_token_full_wallets_and_where_to_go_next(staff_client):
    from decimal import Decimal

    order = f.order(status=OrderStatus.DISPUTED, amount=Decimal("250.440000000000000000"),
                            platform_fee=Decimal("2.504400000000000000"), token_symbol="USDC")
    page = staff_client.get(reverse("admin:chain_order_change", args=[order.pk])).content.decode()
    assert "250.44 USDC" in page and "2.5044 USDC" in page and "250.440000" not in page
    assert f">{order.buyer_id}</a>" in page and f'data-copy="{order.seller_id}"' in page
    assert reverse("admin:disputes_disputedorder_review", args=[order.pk]) in page
    assert "raw events" in page


def test_admin_order_list_shows_each_chain_by_its_configured_label(staff_client, settings):
    from backoffice.chain_settings import chains_from_env

    settings.CHAINS = chains_from_env({"CHAINS": "bsc,ethereum,base", "BASE_NAME": "Base Mainnet"}, production=False)
    for onchain_id, chain in ((201, "bsc"), (202, "ethereum"), (203, "base"), (204, "gone")):
        f.order(onchain_id=onchain_id, chain=chain)
    page = staff_client.get(_url(Order)).content.decode()
    cells = dict(re.findall(r'>#(20\d)</a>.*?<td class="field-chain_name">([^<]*)</td>', page, re.S))
    # The runbook's two keep their short list forms; a third chain shows its configured name; a chain no longer
    # in CHAINS its stored value.
    assert cells == {"201": "BSC", "202": "Ethereum", "203": "Base Mainnet", "204": "gone"}
    # Filters show the long names, the third chain's too.
    assert "BNB Smart Chain</a>" in page and "Base Mainnet</a>" in page
