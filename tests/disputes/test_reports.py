"""RB-04 reports (dispute rate, repeat offenders, new accounts), "blacklist selected", CSV, arbitrator monitoring."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from decimal import Decimal

import pytest

from backoffice.audit.models import AuditLog
from chain.models import OrderStatus
from disputes import selectors
from disputes.models import Blacklist
from tests import factories as f

from .builders import ago

pytestmark = pytest.mark.django_db

RB04 = "/admin/disputes/disputedorder/rb04/"
ARBITRATORS = "/admin/disputes/disputedorder/arbitrators/"


def _orders(n: int, status: str, **fields) -> None:
    for _ in range(n):
        f.order(status=status, **fields)


def _csv(response) -> list[list[str]]:
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


# ---------------------------------------------------------------- dispute rate


def test_dispute_rate_24h_over_threshold():
    _orders(3, OrderStatus.DISPUTED)
    _orders(7, OrderStatus.COMPLETED)
    _orders(5, OrderStatus.COMPLETED, created_at=ago(hours=25))  # outside the 24 h window
    rate = selectors.dispute_rate_24h(20)
    assert (rate.total_orders, rate.disputes, rate.pct, rate.over_threshold) == (10, 3, Decimal("30.0"), True)


@pytest.mark.parametrize(("disputed", "pct"), [(1, "10.0"), (2, "20.0")])  # exactly 20% does not pass 20%
def test_dispute_rate_24h_under_or_at_threshold(disputed, pct):
    _orders(disputed, OrderStatus.DISPUTED)
    _orders(10 - disputed, OrderStatus.COMPLETED)
    _orders(5, OrderStatus.DISPUTED, created_at=ago(hours=30))
    rate = selectors.dispute_rate_24h(20)
    assert (rate.total_orders, rate.pct, rate.over_threshold) == (10, Decimal(pct), False)


def test_dispute_rate_24h_without_orders_is_not_over():
    rate = selectors.dispute_rate_24h(20)
    assert (rate.total_orders, rate.pct, rate.over_threshold) == (0, None, False)


# ---------------------------------------------------------------- repeat offenders


@pytest.mark.parametrize("role", ["seller", "buyer"])
def test_repeat_offenders_ranks_by_disputes_in_window_with_minimum(role):
    worst, second, once, edge = (f.profile(created_at=ago(days=100)) for _ in range(4))
    inside, outside = ago(days=7) + timedelta(minutes=10), ago(days=7) - timedelta(minutes=10)

    def disputed(party, n, created_at=None):
        for _ in range(n):
            f.order(status=OrderStatus.DISPUTED, created_at=created_at or ago(days=2), **{role: party})

    disputed(worst, 4)
    disputed(second, 2)
    disputed(once, 1)
    disputed(edge, 1, inside)  # just inside the window: counts
    disputed(edge, 1)
    disputed(once, 3, outside)  # just outside the window: does not count
    _orders(5, OrderStatus.COMPLETED, **{role: once})  # not disputes
    _orders(3, OrderStatus.RESOLVED_BUYER, **{role: once})  # closed disputes are not RB-04's "disputed"

    rows = selectors.repeat_offenders(role, days=7, minimum=2)
    assert [(r["wallet"], r["disputes"]) for r in rows] == sorted(
        [(worst.wallet, 4), (second.wallet, 2), (edge.wallet, 2)], key=lambda x: (-x[1], x[0]))
    assert rows[0]["account_created"] == worst.created_at and rows[0]["is_blacklisted"] is False
    assert [r["wallet"] for r in selectors.repeat_offenders(role, days=7, minimum=3)] == [worst.wallet]
    assert len(selectors.repeat_offenders(role, days=7, minimum=2, limit=1)) == 1


def test_repeat_offenders_counts_sellers_and_buyers_separately():
    both = f.profile()
    _orders(2, OrderStatus.DISPUTED, seller=both)
    _orders(1, OrderStatus.DISPUTED, buyer=both)
    assert [r["disputes"] for r in selectors.repeat_offenders("seller") if r["wallet"] == both.wallet] == [2]
    assert [r for r in selectors.repeat_offenders("buyer") if r["wallet"] == both.wallet] == []


# ---------------------------------------------------------------- new accounts


def test_new_accounts_high_dispute_rate_counts_only_new_accounts_and_orders_since_creation():
    old_party = f.profile(created_at=ago(days=300))
    new = f.profile(created_at=ago(days=3))
    for status in (OrderStatus.DISPUTED, OrderStatus.RESOLVED_BUYER, OrderStatus.COMPLETED, OrderStatus.COMPLETED):
        f.order(buyer=new, seller=old_party, status=status, created_at=ago(days=1))
    # Orders dated before the account's first sighting are not its record (2/7 = 28.6% would miss 30%).
    _orders(3, OrderStatus.COMPLETED, buyer=new, seller=old_party, created_at=ago(days=5))
    new_seller = f.profile(created_at=ago(days=6))
    _orders(3, OrderStatus.DISPUTED, seller=new_seller, buyer=old_party, created_at=ago(days=2))
    clean = f.profile(created_at=ago(days=2))
    _orders(3, OrderStatus.COMPLETED, seller=clean, buyer=old_party, created_at=ago(days=1))
    too_few = f.profile(created_at=ago(days=2))
    _orders(2, OrderStatus.DISPUTED, buyer=too_few, seller=old_party, created_at=ago(days=1))
    veteran = f.profile(created_at=ago(days=8))  # outside the 7-day window
    _orders(4, OrderStatus.DISPUTED, buyer=veteran, seller=old_party, created_at=ago(days=1))

    rows = selectors.new_accounts_high_dispute_rate(account_days=7, min_orders=3, min_rate_pct=30)
    assert [(r["wallet"], r["orders"], r["disputes"], r["dispute_pct"]) for r in rows] == [
        (new_seller.wallet, 3, 3, Decimal("100.0")),
        (new.wallet, 4, 2, Decimal("50.0")),
    ]
    assert rows[1]["account_created"] == new.created_at


# ---------------------------------------------------------------- blacklist selected (RB-04 page)


def _offenders():
    sellers = [f.profile(created_at=ago(days=100)) for _ in range(2)]
    for s in sellers:
        _orders(3, OrderStatus.DISPUTED, seller=s)
    return sellers


def test_rb04_page_lists_sections_with_checkboxes_only_for_wallets_not_blacklisted(login, manager):
    a, b = _offenders()
    Blacklist.objects.create(wallet=b.wallet, reason="earlier")
    html = login(manager).get(RB04).content.decode()
    assert f'name="wallet" value="{a.wallet}"' in html
    assert f'name="wallet" value="{b.wallet}"' not in html and b.wallet in html
    assert "Blacklist selected wallets" in html


def test_rb04_blacklist_selected_blacklists_all_and_audits_each(login, manager):
    a, b = _offenders()
    response = login(manager).post(RB04, {"wallet": [a.wallet, b.wallet], "reason": "RB-04: 3 disputes in a day"})
    assert response.status_code == 302
    assert set(Blacklist.objects.active().values_list("wallet", flat=True)) == {a.wallet, b.wallet}
    audit = AuditLog.objects.filter(action="blacklist_wallet")
    assert audit.count() == 2
    assert {(r.actor_id, r.reason) for r in audit} == {(manager.pk, "RB-04: 3 disputes in a day")}
    a.refresh_from_db()
    assert a.is_blacklisted


def test_rb04_blacklist_selected_requires_reason(login, manager):
    a, _ = _offenders()
    response = login(manager).post(RB04, {"wallet": [a.wallet], "reason": "  "})
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert not Blacklist.objects.exists() and not AuditLog.objects.exclude(object_type="auth").exists()


def test_rb04_blacklist_selected_requires_a_selection(login, manager):
    _offenders()
    response = login(manager).post(RB04, {"reason": "RB-04"})
    assert "Select at least one wallet" in response.content.decode()
    assert not Blacklist.objects.exists()


def test_rb04_blacklist_selected_is_all_or_nothing_when_one_is_already_blacklisted(login, manager):
    a, b = _offenders()
    Blacklist.objects.create(wallet=b.wallet, reason="earlier")
    response = login(manager).post(RB04, {"wallet": [a.wallet, b.wallet], "reason": "RB-04"})
    assert response.status_code == 200
    assert f"Nothing was blacklisted: {b.wallet} is already blacklisted" in response.content.decode()
    assert list(Blacklist.objects.values_list("wallet", flat=True)) == [b.wallet]
    assert not AuditLog.objects.exclude(object_type="auth").exists()
    a.refresh_from_db()
    assert not a.is_blacklisted


# ---------------------------------------------------------------- CSV export


def test_rb04_csv_export_of_each_section(staff_client):
    seller = f.profile(created_at=ago(days=100))
    buyer = f.profile(created_at=ago(days=100))
    fresh = f.profile(created_at=ago(days=2))
    _orders(2, OrderStatus.DISPUTED, seller=seller, buyer=buyer)
    _orders(3, OrderStatus.DISPUTED, seller=fresh, buyer=buyer)

    sellers = _csv(staff_client.get(RB04, {"export": "sellers"}))
    assert sellers[0] == ["wallet", "disputes", "account_created", "is_blacklisted"]
    assert [row[:2] for row in sellers[1:]] == [[fresh.wallet, "3"], [seller.wallet, "2"]]
    buyers = _csv(staff_client.get(RB04, {"export": "buyers"}))
    assert [row[:2] for row in buyers[1:]] == [[buyer.wallet, "5"]]
    new_accounts = _csv(staff_client.get(RB04, {"export": "new_accounts"}))
    assert new_accounts[0][:4] == ["wallet", "orders", "disputes", "dispute_pct"]
    assert [row[:4] for row in new_accounts[1:]] == [[fresh.wallet, "3", "3", "100.0"]]
    assert _csv(staff_client.get(RB04, {"export": "nonsense"})) == [["wallet"]]


# ---------------------------------------------------------------- arbitrator monitoring


def _resolved(arb, status, minutes_to_resolve: int, *, close_reason="arbitrator", days_ago: float = 2):
    closed = ago(days=days_ago)
    return f.order(chain=arb.chain, status=status, arbitrator_wallet=arb.wallet, close_reason=close_reason,
                   disputed_at=closed - timedelta(minutes=minutes_to_resolve), closed_at=closed,
                   created_at=closed - timedelta(days=1), updated_at=closed)


def test_arbitrators_page_lists_active_by_reputation_and_at_risk_below_20(staff_client):
    high = f.arbitrator(reputation=90)
    mid = f.arbitrator(chain="ethereum", reputation=40)
    risky = f.arbitrator(reputation=15)
    riskier = f.arbitrator(reputation=12)
    retired = f.arbitrator(reputation=5, is_active=False)

    response = staff_client.get(ARBITRATORS)
    assert [a.pk for a in response.context["active"]] == [high.pk, mid.pk, risky.pk, riskier.pk]
    assert [a.pk for a in response.context["at_risk"]] == [riskier.pk, risky.pk]
    assert retired.wallet not in response.content.decode()


def test_arbitrator_stats_30d_counts_outcomes_and_median_time_to_resolve(staff_client):
    arb = f.arbitrator(reputation=60)
    _resolved(arb, OrderStatus.RESOLVED_BUYER, 60)
    _resolved(arb, OrderStatus.RESOLVED_BUYER, 150, close_reason="owner")
    _resolved(arb, OrderStatus.RESOLVED_SELLER, 600)
    _resolved(arb, OrderStatus.RESOLVED_SELLER, 5, days_ago=31)  # older than 30 days
    f.order(status=OrderStatus.DISPUTED, arbitrator_wallet=arb.wallet, disputed_at=ago(hours=3))  # still open
    other = f.arbitrator(chain="ethereum")
    _resolved(other, OrderStatus.RESOLVED_SELLER, 20)

    stats = selectors.arbitrator_stats_30d()
    assert [(s["chain"], s["arbitrator_wallet"], s["cases"]) for s in stats] == [
        ("bsc", arb.wallet, 3), ("ethereum", other.wallet, 1)]
    mine = stats[0]
    assert (mine["favor_buyer"], mine["favor_seller"], mine["overridden_by_owner"]) == (2, 1, 1)
    assert mine["median_seconds_to_resolve"] == pytest.approx(150 * 60)
    assert selectors.arbitrator_stats_30d(chain="ethereum")[0]["median_seconds_to_resolve"] == pytest.approx(1200)

    html = staff_client.get(ARBITRATORS).content.decode()
    assert "<td>2.5 h</td>" in html and "<td>0.3 h</td>" in html

    rows = _csv(staff_client.get(ARBITRATORS, {"export": "1"}))
    assert rows[0][:3] == ["chain", "arbitrator_wallet", "cases"]
    assert rows[1][:6] == ["bsc", arb.wallet, "3", "2", "1", "1"]
