"""A dispute reviewer works the queue in a real browser: oldest dispute first, claim, note, recommendation."""
from __future__ import annotations

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.audit.models import AuditLog
from disputes.models import DisputeCase, DisputeNote
from tests.disputes.builders import disputed_order

from .conftest import device_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_dispute_review_claims_notes_and_recommends_the_oldest_dispute(open_browser, make_staff):
    rita = make_staff("rita", "dispute reviewer")
    newer = disputed_order(disputed_hours=2, amount="250")
    oldest = disputed_order(disputed_hours=60, amount="1200")
    disputed_order(disputed_hours=10, amount="80")
    browser = open_browser("rita")
    browser.login("rita", code=lambda: device_code(TOTPDevice.objects.get(user=rita)))
    assert browser.path == "/admin/"

    browser.get("/admin/disputes/disputedorder/")
    rows = browser.wait_for("#result_list tbody tr")
    assert len(rows) == 3
    first = rows[0].find_element("css selector", "a[href$='/review/']")
    assert first.text == f"#{oldest.onchain_id}", "the queue lists the oldest dispute first"
    assert "2 d 12 h" in rows[0].text
    browser.shot("queue")

    browser.click_and_wait(first)
    review_path = f"/admin/disputes/disputedorder/{oldest.pk}/review/"
    assert browser.path == review_path
    assert "Dispute review" in browser.text and "Assignee: nobody" in browser.text
    browser.shot("review-page")

    browser.click_and_wait(browser.button("Claim"))
    assert "You hold this dispute now." in browser.text
    assert "Assignee: rita" in browser.text
    browser.shot("claimed")

    note = "Buyer's bank statement shows the transfer; seller stopped answering after 2 h.\nSecond line."
    browser.fill("#id_body", note)
    browser.click_and_wait(browser.button("Add note"))
    assert "Note added." in browser.text
    browser.shot("note-added")

    browser.select("#id_recommendation", "favor_buyer")
    browser.fill("#id_note", "Payment proof is consistent with the chat log.")
    browser.click_and_wait(browser.button("Record recommendation"))
    assert "Recommendation recorded." in browser.text
    browser.shot("recommended")

    browser.get(review_path)  # a reload shows what was stored, not the flash messages
    text = browser.text
    assert "Assignee: rita" in text
    assert "Buyer's bank statement shows the transfer" in text and "Second line." in text
    assert "Recommendation: Resolve for the buyer by rita — Payment proof is consistent with the chat log." in text
    assert browser.button("Release"), "the holder is offered Release instead of Claim"
    browser.shot("after-reload")

    case = DisputeCase.objects.get(order=oldest)
    assert case.assignee == rita and case.claimed_at is not None
    assert case.recommendation == "favor_buyer" and case.recommended_by == rita
    assert case.recommendation_note == "Payment proof is consistent with the chat log."
    (author, body), = DisputeNote.objects.filter(case=case).values_list("author__username", "body")
    assert author == "rita" and body.replace("\r\n", "\n") == note  # browsers send textarea lines as CRLF
    assert not DisputeCase.objects.filter(order=newer).exists()
    audited = set(AuditLog.objects.filter(actor=rita).values_list("action", flat=True))
    assert {"claim_dispute", "add_dispute_note", "recommend_resolution"} <= audited
