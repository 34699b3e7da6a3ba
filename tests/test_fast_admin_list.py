"""The fast changelist body renders exactly what Django's own would."""
from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import result_list
from django.template.loader import render_to_string
from django.test import RequestFactory

from backoffice.templatetags.fast_admin_list import _fast_row, fast_result_list
from chain.models import Order
from disputes.models import DisputedOrder
from tests import factories as f

pytestmark = pytest.mark.django_db


def _changelist(model, user):
    request = RequestFactory().get("/")
    request.user = user
    cl = admin.site._registry[model].get_changelist_instance(request)
    cl.formset = None  # as changelist_view sets it (no list_editable)
    return cl


@pytest.mark.parametrize("model", [Order, DisputedOrder])
def test_fast_rows_equal_djangos_rows(model, staff_user):
    buyer = f.profile(display_name='<b>"x"</b>')
    for status in ("completed", "disputed", "disputed"):
        f.order(buyer=buyer, status=status, arbitrator_wallet=f.wallet(0xA1) if status == "disputed" else None,
                evidence_cids=["bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"])
    cl = _changelist(model, staff_user)
    fast = _tags(fast_result_list(cl))
    django = _tags(render_to_string("admin/change_list_results.html", result_list(cl)))
    assert fast.count("<tr>") == len(cl.result_list) + 1 > 1, "a header and rows expected"
    assert fast == django


def test_fast_rows_escape_text():
    obj = type("Row", (), {"pk": 1})()
    columns = [("name", lambda o: '<script>"x"</script>', False)]
    html = _fast_row(type("CL", (), {})(), obj, columns)
    assert html == '<td class="field-name">&lt;script&gt;&quot;x&quot;&lt;/script&gt;</td>'


def _tags(html: str) -> str:
    """Markup without the whitespace between tags (the templates lay rows out differently)."""
    return re.sub(r">\s+<", "><", html).strip()
