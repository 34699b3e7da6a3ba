"""The fast changelist body renders exactly what Django's own would."""
from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.templatetags.admin_list import items_for_result
from django.test import RequestFactory

from backoffice.templatetags.fast_admin_list import fast_result_list
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
    fast = fast_result_list(cl)["results"]
    assert fast, "rows expected"
    for row, obj in zip(fast, cl.result_list):
        assert list(row) == list(items_for_result(cl, obj, None))
