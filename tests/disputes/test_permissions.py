"""Roles: a reviewer claims, notes and recommends; a blacklist manager blacklists; a viewer only looks.

Every change goes through a service that writes an audit row naming the actor.
"""
from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from backoffice.audit.models import AuditLog
from disputes import services
from disputes.models import Blacklist, DisputeCase, DisputeNote
from ops.models import ContractAction
from tests import factories as f

from .builders import disputed_order

pytestmark = pytest.mark.django_db

RB04 = "/admin/disputes/disputedorder/rb04/"


def review_url(order) -> str:
    return reverse("admin:disputes_disputedorder_review", args=[order.pk])


def test_dispute_reviewer_claims_notes_and_recommends_each_audited_with_actor(reviewer):
    order = disputed_order()
    services.claim_dispute(actor=reviewer, order=order)
    services.add_dispute_note(actor=reviewer, order=order, body="Checked the chat log.")
    services.recommend_resolution(actor=reviewer, order=order, recommendation="favor_seller", note="Proof of payment.")
    services.release_dispute(actor=reviewer, order=order)

    audit = list(AuditLog.objects.order_by("id").values_list("action", "actor", "actor_label", "object_type",
                                                             "object_id"))
    assert audit == [(action, reviewer.pk, "rita", "disputes.disputecase", str(order.pk)) for action in
                     ("claim_dispute", "add_dispute_note", "recommend_resolution", "release_dispute")]
    assert AuditLog.objects.get(action="add_dispute_note").after["body"] == "Checked the chat log."
    assert AuditLog.objects.get(action="recommend_resolution").reason == "Proof of payment."


def test_dispute_reviewer_cannot_blacklist(login, reviewer):
    wallet = f.profile().wallet
    with pytest.raises(PermissionDenied):
        services.blacklist_wallet(actor=reviewer, wallet=wallet, reason="suspicious")
    with pytest.raises(PermissionDenied):
        services.blacklist_wallets(actor=reviewer, wallets=[wallet], reason="suspicious")
    with pytest.raises(PermissionDenied):
        services.import_blacklist(actor=reviewer, data=f"wallet,reason,source\n{wallet},x,manual\n")

    client = login(reviewer)
    assert client.post(RB04, {"wallet": [wallet], "reason": "suspicious"}).status_code == 403
    assert client.get("/admin/disputes/blacklist/import/").status_code == 403
    assert "Only blacklist managers can blacklist" in client.get(RB04).content.decode()
    assert not Blacklist.objects.exists() and not AuditLog.objects.exclude(object_type="auth").exists()


def test_dispute_reviewer_cannot_propose_contract_actions(login, reviewer):
    order = disputed_order(deadline_passed=True)
    with pytest.raises(PermissionDenied):
        services.propose_owner_resolution(actor=reviewer, order=order, favor_buyer=True, reason="arbitrator gone")
    early = disputed_order(deadline_passed=False)
    with pytest.raises(PermissionDenied):  # refused for the role, whatever the order's state
        services.propose_owner_resolution(actor=reviewer, order=early, favor_buyer=True, reason="arbitrator gone")

    response = login(reviewer).post(review_url(order), {"op": "resolve", "favor": "buyer", "reason": "gone"})
    assert response.status_code == 403
    assert not ContractAction.objects.exists() and not AuditLog.objects.exclude(object_type="auth").exists()


def test_blacklist_manager_blacklists_from_rb04_but_cannot_claim(login, manager):
    order = disputed_order()
    with pytest.raises(PermissionDenied):
        services.claim_dispute(actor=manager, order=order)
    with pytest.raises(PermissionDenied):
        services.add_dispute_note(actor=manager, order=order, body="hello")
    client = login(manager)
    assert client.post(review_url(order), {"op": "claim"}).status_code == 403
    assert not DisputeCase.objects.exists()

    response = client.post(RB04, {"wallet": [order.seller_id], "reason": "RB-04 repeat offender"})
    assert response.status_code == 302
    entry = Blacklist.objects.get()
    assert (entry.wallet, entry.created_by, entry.source) == (order.seller_id, manager, "manual")
    audit = AuditLog.objects.exclude(object_type="auth").get()
    assert (audit.action, audit.actor, audit.reason) == ("blacklist_wallet", manager, "RB-04 repeat offender")


def test_viewer_sees_queue_and_review_but_cannot_claim_note_or_blacklist(login, viewer):
    order = disputed_order()
    client = login(viewer)
    assert client.get("/admin/disputes/disputedorder/").status_code == 200
    html = client.get(review_url(order)).content.decode()
    assert 'value="claim"' not in html and 'value="note"' not in html
    for data in ({"op": "claim"}, {"op": "note", "body": "x"}, {"op": "recommend", "recommendation": "escalate",
                                                                  "note": "x"}):
        assert client.post(review_url(order), data).status_code == 403
    assert client.post(RB04, {"wallet": [order.buyer_id], "reason": "x"}).status_code == 403
    with pytest.raises(PermissionDenied):
        services.claim_dispute(actor=viewer, order=order)
    assert (not DisputeCase.objects.exists() and not DisputeNote.objects.exists()
            and not AuditLog.objects.exclude(object_type="auth").exists())
