"""What every admin page does for a new operator: empty lists say why, shortened values copy in full, times are
UTC, and the sidebar starts with the daily work."""
from __future__ import annotations

import re

import pytest
from django.urls import reverse

from backoffice.audit.models import AuditLog
from tests import factories as f

pytestmark = pytest.mark.django_db


def test_empty_changelist_says_what_empty_means_and_what_to_do(staff_client):
    page = staff_client.get(reverse("admin:alerts_alertchannel_changelist")).content.decode()
    assert 'class="empty-state"' in page and "Add a Telegram bot, a webhook or PagerDuty" in page


def test_empty_search_result_offers_to_clear_the_search_not_the_empty_list_text(staff_client):
    f.order()
    page = staff_client.get(reverse("admin:chain_order_changelist") + "?q=" + "0x" + "ab" * 20).content.decode()
    assert "Nothing matches this search or these filters" in page
    assert "No order mirrored yet" not in page


def test_full_list_shows_no_empty_state(staff_client):
    f.order()
    page = staff_client.get(reverse("admin:chain_order_changelist")).content.decode()
    assert 'class="empty-state"' not in page


def test_order_changelist_shortened_wallets_keep_their_whole_value_to_copy(staff_client):
    order = f.order()
    page = staff_client.get(reverse("admin:chain_order_changelist")).content.decode()
    for wallet in (order.buyer_id, order.seller_id):
        assert f'data-copy="{wallet}"' in page and f'title="{wallet}"' in page
        assert f"{wallet[:8]}…{wallet[-6:]}" in page
    assert "backoffice/copy.js" in page


def test_times_are_shown_in_utc_with_the_zone_named(staff_client, staff_user):
    from django.db import transaction

    from backoffice.audit.services import record_audit

    with transaction.atomic():
        row = record_audit(actor=staff_user, action="test_action", object_type="test")
    page = staff_client.get(reverse("admin:audit_auditlog_changelist")).content.decode()
    assert row.created_at.strftime("%Y-%m-%d %H:%M") + " UTC" in page
    assert not re.search(r"\b[ap]\.m\.", page)
    assert AuditLog.objects.filter(pk=row.pk).exists()


def test_sidebar_starts_with_the_daily_work(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()
    captions = re.findall(r'<caption>\s*<a [^>]*class="section"[^>]*>([^<]+)</a>', page)
    assert captions[:5] == ["Chain mirror", "Trust and safety", "Operations", "Alerts", "Audit"], captions
