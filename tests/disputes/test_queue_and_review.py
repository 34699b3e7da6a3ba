"""The dispute queue and the review page: what staff see, what they may do, and the audit it leaves."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from backoffice.audit.models import AuditLog
from chain.addresses import checksum
from chain.models import ChainEvent, OrderStatus
from disputes import services
from disputes.models import Blacklist, DisputeCase, DisputeNote, Recommendation
from tests import factories as f

from .builders import ago, disputed_order

pytestmark = pytest.mark.django_db

QUEUE = "/admin/disputes/disputedorder/"
GATEWAY = "https://gateway.example/ipfs/"


def review_url(order) -> str:
    return reverse("admin:disputes_disputedorder_review", args=[order.pk])


def listed(response) -> list[int]:
    assert response.status_code == 200
    return [o.pk for o in response.context["cl"].result_list]


# ---------------------------------------------------------------- queue


def test_queue_lists_only_disputed_orders_oldest_first(staff_client):
    newest = disputed_order(disputed_hours=1)
    oldest = disputed_order(disputed_hours=80)
    middle = disputed_order(disputed_hours=10)
    f.order(status=OrderStatus.COMPLETED)
    f.order(status=OrderStatus.RESOLVED_BUYER, disputed_at=ago(hours=200))

    assert listed(staff_client.get(QUEUE)) == [oldest.pk, middle.pk, newest.pk]


def test_queue_shows_age_with_over_sla_marker(staff_client, settings):
    settings.DISPUTE_SLA_HOURS = 24
    disputed_order(disputed_hours=5)
    disputed_order(disputed_hours=30)

    html = staff_client.get(QUEUE).content.decode()
    assert html.count('title="over the 24 h SLA"') == 1
    assert ">1 d 6 h</strong>" in html  # the late one, marked
    assert "<td class=\"field-age\">5 h</td>" in html  # the young one, plain


def test_queue_shows_amount_token_chain_parties_arbitrator_deadline_and_evidence_links(staff_client, settings):
    settings.IPFS_GATEWAY = GATEWAY
    buyer, seller = f.profile(), f.profile()
    order = disputed_order(buyer=buyer, seller=seller, chain="ethereum", amount="1234.5", token_symbol="USDC",
                           arbitrator_wallet=f.wallet(0xA2), evidence_cids=["bafybeiaaaa1111", "bafybeibbbb2222"])

    response = staff_client.get(QUEUE)
    html = response.content.decode()
    assert listed(response) == [order.pk]
    assert review_url(order) in html and f">#{order.onchain_id}<" in html
    for text in ("1234.5", "USDC", "ethereum", buyer.wallet[:8], seller.wallet[:8], f.wallet(0xA2)[-6:],
                 f'href="{GATEWAY}bafybeiaaaa1111"', f'href="{GATEWAY}bafybeibbbb2222"'):
        assert text in html, text
    assert order.dispute_deadline.strftime("%Y") in html


@pytest.mark.parametrize(("query", "expected"), [
    ("chain__exact=ethereum", {"eth_young_small"}),
    ("age=over", {"bsc_old_large"}),
    ("age=within", {"eth_young_small", "bsc_young_mid"}),
    ("amount=lt100", {"eth_young_small"}),
    ("amount=100-1000", {"bsc_young_mid"}),
    ("amount=gt5000", {"bsc_old_large"}),
])
def test_queue_filters_by_chain_age_and_amount(staff_client, settings, query, expected):
    settings.DISPUTE_SLA_HOURS = 48
    orders = {
        "eth_young_small": disputed_order(chain="ethereum", amount="50", disputed_hours=2),
        "bsc_young_mid": disputed_order(chain="bsc", amount="100", disputed_hours=3),
        "bsc_old_large": disputed_order(chain="bsc", amount="9000", disputed_hours=60),
    }
    names = {o.pk: name for name, o in orders.items()}
    assert {names[pk] for pk in listed(staff_client.get(f"{QUEUE}?{query}"))} == expected


def test_queue_filters_by_arbitrator(staff_client):
    arb = f.arbitrator(address=f.wallet(0xA3), reputation=80)
    theirs = disputed_order(arbitrator_wallet=arb.wallet)
    disputed_order(arbitrator_wallet=f.wallet(0xA4))

    assert listed(staff_client.get(f"{QUEUE}?arbitrator={arb.wallet}")) == [theirs.pk]


def test_queue_filters_by_assignee_mine_and_unassigned(login, reviewer, other_reviewer):
    mine, theirs, nobody, released = (disputed_order(disputed_hours=h) for h in (4, 3, 2, 1))
    services.claim_dispute(actor=reviewer, order=mine)
    services.claim_dispute(actor=other_reviewer, order=theirs)
    services.claim_dispute(actor=reviewer, order=released)
    services.release_dispute(actor=reviewer, order=released)  # a case row with no assignee
    client = login(reviewer)

    assert listed(client.get(f"{QUEUE}?assignee=me")) == [mine.pk]
    assert listed(client.get(f"{QUEUE}?assignee=none")) == [nobody.pk, released.pk]
    assert listed(client.get(f"{QUEUE}?assignee=any")) == [mine.pk, theirs.pk]


def test_queue_search_by_order_id_wallet_checksummed_wallet_and_tx_hash(staff_client):
    buyer = f.profile("0xdac17f958d2ee523a2206206994597c13d831ec7")
    target = disputed_order(buyer=buyer, onchain_id=987654, last_tx_hash=f.tx_hash(0xBEEF))
    disputed_order(onchain_id=123)
    f.order(status=OrderStatus.COMPLETED, buyer=buyer, onchain_id=987655)  # same wallet, not disputed

    for term in ("987654", buyer.wallet, checksum(buyer.wallet), f.tx_hash(0xBEEF), target.created_tx_hash.upper()
                 .replace("0X", "0x")):
        assert listed(staff_client.get(QUEUE, {"q": term})) == [target.pk], term
    assert listed(staff_client.get(QUEUE, {"q": "not a thing"})) == []


def test_queue_visible_to_viewer_and_hidden_from_staff_without_roles(login, viewer, make_staff):
    disputed_order()
    assert login(viewer).get(QUEUE).status_code == 200
    assert login(make_staff("nobody")).get(QUEUE).status_code == 403


# ---------------------------------------------------------------- review page


def _event(order, block: int, log_index: int, name: str, **fields) -> ChainEvent:
    return ChainEvent.objects.create(
        chain=order.chain, block_number=block, block_hash=f.tx_hash(), block_time=ago(hours=10) + timedelta(
            seconds=block), tx_hash=f.tx_hash(), log_index=log_index, address=f.wallet(0xE5C), contract="escrow",
        event=name, order_id=fields.pop("order_id", order.onchain_id), **fields)


def test_review_page_shows_timeline_from_chain_events_in_block_order(staff_client):
    order = disputed_order(onchain_id=77)
    disputed = _event(order, 120, 0, "OrderDisputed")
    created = _event(order, 100, 3, "OrderCreated")
    delivered = _event(order, 110, 1, "OrderDelivered")
    _event(order, 115, 0, "", decode_error="unknown topic")  # skipped log
    _event(order, 105, 0, "OrderCreated", order_id=78)  # another order
    other_chain = f.order(chain="ethereum", onchain_id=77)
    _event(other_chain, 101, 0, "OrderCreated")  # same id on the other chain

    response = staff_client.get(review_url(order))
    assert response.status_code == 200
    assert [e.pk for e in response.context["timeline"]] == [created.pk, delivered.pk, disputed.pk]
    html = response.content.decode()
    assert html.index("OrderCreated") < html.index("OrderDelivered") < html.index("OrderDisputed")


def test_review_page_shows_both_parties_history_against_hand_counted_fixture(staff_client):
    old = f.profile()
    buyer = f.profile(created_at=ago(days=10, hours=1))
    seller = f.profile(created_at=ago(days=400))
    order = disputed_order(buyer=buyer, seller=seller)  # open dispute: buyer 1, seller 1
    # Buyer: as buyer 1 completed, 1 won, 1 lost; as seller 1 completed, 1 cancelled, 1 lost.
    f.order(buyer=buyer, seller=old, status=OrderStatus.COMPLETED)
    f.order(buyer=buyer, seller=old, status=OrderStatus.RESOLVED_BUYER)
    f.order(buyer=buyer, seller=old, status=OrderStatus.RESOLVED_SELLER)
    f.order(buyer=old, seller=buyer, status=OrderStatus.COMPLETED)
    f.order(buyer=old, seller=buyer, status=OrderStatus.CANCELLED)
    f.order(buyer=old, seller=buyer, status=OrderStatus.RESOLVED_BUYER)
    # Seller: 3 completed as seller, 1 won as seller; blacklisted.
    for _ in range(3):
        f.order(buyer=old, seller=seller, status=OrderStatus.COMPLETED)
    f.order(buyer=old, seller=seller, status=OrderStatus.RESOLVED_SELLER)
    Blacklist.objects.create(wallet=seller.wallet, reason="fraud ring")

    response = staff_client.get(review_url(order))
    b, s = response.context["buyer"], response.context["seller"]
    assert (b.orders, b.completed, b.completion_rate, b.disputes, b.open_disputes) == (7, 2, Decimal("28.6"), 4, 1)
    assert (b.won_as_buyer, b.lost_as_buyer, b.won_as_seller, b.lost_as_seller) == (1, 1, 0, 1)
    assert (b.is_blacklisted, b.account_age_days) == (False, 10)
    assert (s.orders, s.completed, str(s.completion_rate), s.disputes, s.open_disputes) == (5, 3, "60.0", 2, 1)
    assert (s.won_as_buyer, s.lost_as_buyer, s.won_as_seller, s.lost_as_seller) == (0, 0, 1, 0)
    assert (s.is_blacklisted, s.account_age_days) == (True, 400)
    html = response.content.decode()
    for text in ("completion rate 28.6%", "completion rate 60.0%", "10 days", "400 days", "BLACKLISTED",
                 "won 1, lost 1", "4 (1 open)"):
        assert text in html, text


def test_review_page_shows_arbitrator_record(staff_client):
    arb = f.arbitrator(address=f.wallet(0xA5), reputation=15)
    order = disputed_order(arbitrator_wallet=arb.wallet)
    disputed_order(arbitrator_wallet=arb.wallet)
    f.order(status=OrderStatus.RESOLVED_BUYER, arbitrator_wallet=arb.wallet, close_reason="owner")
    f.order(status=OrderStatus.RESOLVED_SELLER, arbitrator_wallet=arb.wallet, close_reason="arbitrator")

    response = staff_client.get(review_url(order))
    assert response.context["arbitrator_record"] == {"open_cases": 2, "resolved": 2, "favor_buyer": 1,
                                                     "favor_seller": 1, "overridden_by_owner": 1}
    assert "(at risk)" in response.content.decode()


# ---------------------------------------------------------------- claim, release, notes, recommendation


def test_claim_dispute_holds_case_and_refuses_another_reviewer(login, reviewer, other_reviewer):
    order = disputed_order()
    response = login(reviewer).post(review_url(order), {"op": "claim"})
    assert response.status_code == 302
    assert DisputeCase.objects.get(order=order).assignee == reviewer

    response = login(other_reviewer).post(review_url(order), {"op": "claim"}, follow=True)
    assert "Rita has claimed this dispute" in response.content.decode()  # capfirst by the admin
    assert DisputeCase.objects.get(order=order).assignee == reviewer
    with pytest.raises(ValidationError, match="has claimed"):
        services.claim_dispute(actor=other_reviewer, order=order)
    with pytest.raises(ValidationError, match="Only rita"):
        services.release_dispute(actor=other_reviewer, order=order)


def test_release_dispute_frees_case_for_another_reviewer(login, reviewer, other_reviewer):
    order = disputed_order()
    services.claim_dispute(actor=reviewer, order=order)
    assert login(reviewer).post(review_url(order), {"op": "release"}).status_code == 302
    case = DisputeCase.objects.get(order=order)
    assert (case.assignee, case.claimed_at) == (None, None)

    services.claim_dispute(actor=other_reviewer, order=order)
    assert DisputeCase.objects.get(order=order).assignee == other_reviewer


def test_claim_dispute_refuses_order_not_disputed(reviewer):
    order = f.order(status=OrderStatus.COMPLETED)
    with pytest.raises(ValidationError, match="not disputed"):
        services.claim_dispute(actor=reviewer, order=order)
    assert not DisputeCase.objects.exists()


def test_add_dispute_note_appends_and_notes_refuse_raw_update_and_delete(login, reviewer):
    order = disputed_order()
    client = login(reviewer)
    client.post(review_url(order), {"op": "note", "body": "Buyer's screenshot is edited."})
    client.post(review_url(order), {"op": "note", "body": "Seller sent a bank slip."})
    notes = list(DisputeNote.objects.filter(case__order=order).values_list("body", "author"))
    assert notes == [("Buyer's screenshot is edited.", reviewer.pk), ("Seller sent a bank slip.", reviewer.pk)]
    html = client.get(review_url(order)).content.decode()
    assert html.index("screenshot is edited") < html.index("bank slip")

    for sql in ("UPDATE dispute_notes SET body = 'rewritten'", "DELETE FROM dispute_notes"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cur:
            cur.execute(sql)
    assert DisputeNote.objects.count() == 2


def test_add_dispute_note_refuses_empty_note(login, reviewer):
    order = disputed_order()
    response = login(reviewer).post(review_url(order), {"op": "note", "body": "   "})
    assert response.status_code == 200 and "Please correct the form" in response.content.decode()
    with pytest.raises(ValidationError, match="empty"):
        services.add_dispute_note(actor=reviewer, order=order, body=" ")
    assert not DisputeNote.objects.exists()


def test_recommend_resolution_records_choice_note_and_author(login, reviewer):
    order = disputed_order()
    response = login(reviewer).post(review_url(order), {"op": "recommend", "recommendation": "favor_buyer",
                                                       "note": "Seller never delivered."})
    assert response.status_code == 302
    case = DisputeCase.objects.get(order=order)
    assert (case.recommendation, case.recommendation_note, case.recommended_by) == (
        Recommendation.FAVOR_BUYER, "Seller never delivered.", reviewer)
    assert "Resolve for the buyer" in login(reviewer).get(review_url(order)).content.decode()
    with pytest.raises(ValidationError, match="justification"):
        services.recommend_resolution(actor=reviewer, order=order, recommendation="escalate", note="")


# ---------------------------------------------------------------- resolve for buyer / seller


@pytest.mark.parametrize(("role", "deadline_passed", "shown"), [
    ("operator", True, True),
    ("operator", False, False),
    ("reviewer", True, False),
])
def test_resolve_form_shows_only_after_deadline_and_for_contract_operators(login, request, role, deadline_passed,
                                                                           shown):
    order = disputed_order(deadline_passed=deadline_passed)
    html = login(request.getfixturevalue(role)).get(review_url(order)).content.decode()
    assert ('value="resolve"' in html) is shown
    assert ("Only contract operators can propose" in html) is (deadline_passed and not shown)


def test_propose_owner_resolution_refuses_order_not_disputed_or_before_deadline(operator):
    closed = f.order(status=OrderStatus.RESOLVED_BUYER, dispute_deadline=ago(hours=1))
    with pytest.raises(ValidationError, match="not disputed"):
        services.propose_owner_resolution(actor=operator, order=closed, favor_buyer=True, reason="late arbitrator")
    early = disputed_order(deadline_passed=False)
    with pytest.raises(ValidationError, match="deadline has not passed"):
        services.propose_owner_resolution(actor=operator, order=early, favor_buyer=True, reason="late arbitrator")
    no_deadline = disputed_order(deadline_passed=True)
    no_deadline.dispute_deadline = None
    with pytest.raises(ValidationError, match="deadline has not passed"):
        services.propose_owner_resolution(actor=operator, order=no_deadline, favor_buyer=False, reason="x")
    assert not AuditLog.objects.exclude(object_type="auth").exists()
