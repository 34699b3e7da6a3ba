"""The navigation sidebar and app list are built once per permissions, yet always show what the user may see."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from tests import factories as f

pytestmark = pytest.mark.django_db


def _sidebar(html: str) -> str:
    start = html.index('<nav class="sticky" id="nav-sidebar"')
    return html[start:html.index("</nav>", start)]


def test_sidebar_follows_permissions_and_highlights_the_current_page(client, django_user_model):
    user = django_user_model.objects.create_user("rita", password="x", is_staff=True)
    user.groups.set([Group.objects.get(name="dispute reviewer")])
    client.force_login(user)
    page = client.get("/admin/disputes/disputedorder/")
    assert page.status_code == 200
    nav = _sidebar(page.content.decode())
    assert 'href="/admin/disputes/disputedorder/" aria-current="page"' in nav
    assert "current-model" in nav
    assert "/admin/auth/user/" not in nav  # staff accounts are for the ops admins

    other = client.get("/admin/chain/order/")
    nav = _sidebar(other.content.decode())
    assert 'href="/admin/chain/order/" aria-current="page"' in nav
    assert 'href="/admin/disputes/disputedorder/" aria-current' not in nav

    # A permission granted takes effect on the next page, cached lists notwithstanding.
    user.groups.add(Group.objects.get(name="ops admin"))
    nav = _sidebar(client.get("/admin/disputes/disputedorder/").content.decode())
    assert "/admin/auth/user/" in nav


def test_two_users_never_share_a_sidebar(client, staff_user, django_user_model):
    reviewer = django_user_model.objects.create_user("rita", password="x", is_staff=True)
    reviewer.groups.set([Group.objects.get(name="dispute reviewer")])
    client.force_login(staff_user)
    full = _sidebar(client.get("/admin/chain/order/").content.decode())
    client.force_login(reviewer)
    limited = _sidebar(client.get("/admin/chain/order/").content.decode())
    assert "/admin/auth/user/" in full and "/admin/auth/user/" not in limited


def test_a_wallet_opens_its_profile(staff_client):
    profile = f.profile(display_name="Seller One")
    page = staff_client.get(f"/admin/chain/userprofile/{profile.wallet}/change/")
    assert page.status_code == 200 and "Seller One" in page.content.decode()
    upper = staff_client.get(f"/admin/chain/userprofile/0x{profile.wallet[2:].upper()}/change/")
    assert upper.status_code == 200 and "Seller One" in upper.content.decode()
    missing = staff_client.get(f"/admin/chain/userprofile/0x{'ab' * 20}/change/", follow=True)
    assert "doesn’t exist" in missing.content.decode()


def test_dispute_queue_links_parties_by_wallet(staff_client):
    buyer, seller = f.profile(), f.profile()
    f.order(buyer=buyer, seller=seller, status="disputed", arbitrator_wallet=f.wallet(0xA1))
    html = staff_client.get("/admin/disputes/disputedorder/").content.decode()
    assert f'href="/admin/chain/userprofile/{buyer.wallet}/change/"' in html
    assert f'href="/admin/chain/userprofile/{seller.wallet}/change/"' in html
    assert staff_client.get(f"/admin/chain/userprofile/{buyer.wallet}/change/").status_code == 200
