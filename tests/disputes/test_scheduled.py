"""Scheduled trust and safety work: expiry lifting, repeat-offender flags (never blacklisting), the rate alert."""
from __future__ import annotations

import pytest

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from chain.models import OrderStatus, UserProfile
from disputes import services
from disputes.models import Blacklist, ReviewFlag
from ops.models import PlatformFlag
from tests import factories as f

from .builders import ago

pytestmark = pytest.mark.django_db


def _orders(n: int, status: str, **fields) -> None:
    for _ in range(n):
        f.order(status=status, **fields)


# ---------------------------------------------------------------- expired blacklist entries


def test_lift_expired_blacklist_entries_lifts_only_expired_active_entries_as_the_system(staff_user):
    expired, future, permanent, lifted_before = (f.profile() for _ in range(4))
    expired_entry = Blacklist.objects.create(wallet=expired.wallet, reason="30 days", expires_at=ago(minutes=5))
    Blacklist.objects.create(wallet=future.wallet, reason="30 days", expires_at=ago(days=-3))
    Blacklist.objects.create(wallet=permanent.wallet, reason="forever")
    old = Blacklist.objects.create(wallet=lifted_before.wallet, reason="old", expires_at=ago(days=2))
    services.lift_blacklist_entry(actor=staff_user, entry=old, reason="appeal")
    before = AuditLog.objects.exclude(object_type="auth").count()

    assert services.lift_expired_blacklist_entries() == 1

    expired_entry.refresh_from_db()
    assert expired_entry.lifted_at is not None and expired_entry.lifted_by is None
    assert expired_entry.lift_reason.startswith("expired at ")
    flags = dict(UserProfile.objects.values_list("wallet", "is_blacklisted"))
    assert flags == {expired.wallet: False, future.wallet: True, permanent.wallet: True, lifted_before.wallet: False}
    audit = AuditLog.objects.order_by("-id").first()
    assert AuditLog.objects.exclude(object_type="auth").count() == before + 1
    assert (audit.action, audit.actor, audit.actor_label, audit.object_id) == (
        "lift_blacklist_entry", None, "system:blacklist-expiry", str(expired_entry.pk))

    assert services.lift_expired_blacklist_entries() == 0  # safe to run twice
    assert AuditLog.objects.exclude(object_type="auth").count() == before + 1


# ---------------------------------------------------------------- repeat offenders


def test_flag_repeat_offenders_flags_sellers_and_buyers_but_never_blacklists():
    seller, buyer, mild = f.profile(), f.profile(), f.profile()
    _orders(3, OrderStatus.DISPUTED, seller=seller)
    _orders(4, OrderStatus.DISPUTED, buyer=buyer)
    _orders(2, OrderStatus.DISPUTED, seller=mild)  # under the minimum of 3

    assert services.flag_repeat_offenders() == 2

    flags = {(fl.wallet, fl.role): fl for fl in ReviewFlag.objects.all()}
    assert set(flags) == {(seller.wallet, "seller"), (buyer.wallet, "buyer")}
    assert flags[(buyer.wallet, "buyer")].disputes == 4
    assert "4 open disputes as buyer in 7 days" in flags[(buyer.wallet, "buyer")].reason
    assert not Blacklist.objects.exists()
    assert not UserProfile.objects.filter(is_blacklisted=True).exists()
    audit = AuditLog.objects.filter(action="flag_for_review")
    assert audit.count() == 2 and {a.actor_label for a in audit} == {"system:repeat-offenders"}


def test_flag_repeat_offenders_is_idempotent_one_open_flag_per_wallet_and_role(reviewer):
    seller = f.profile()
    _orders(3, OrderStatus.DISPUTED, seller=seller)
    _orders(3, OrderStatus.DISPUTED, buyer=seller)  # the same wallet as buyer is a second flag

    assert services.flag_repeat_offenders() == 2
    assert services.flag_repeat_offenders() == 0
    assert ReviewFlag.objects.count() == 2 and AuditLog.objects.filter(action="flag_for_review").count() == 2

    flag = ReviewFlag.objects.get(role="seller")
    services.resolve_review_flag(actor=reviewer, flag=flag, resolution="legitimate seller, bad week")
    assert services.flag_repeat_offenders() == 1  # still offending after review: flagged afresh
    assert ReviewFlag.objects.filter(wallet=seller.wallet, role="seller").count() == 2
    assert ReviewFlag.objects.filter(resolved_at__isnull=True).count() == 2


def test_flag_repeat_offenders_skips_blacklisted_wallets():
    seller = f.profile()
    _orders(5, OrderStatus.DISPUTED, seller=seller)
    Blacklist.objects.create(wallet=seller.wallet, reason="already handled")

    assert services.flag_repeat_offenders() == 0
    assert not ReviewFlag.objects.exists()


# ---------------------------------------------------------------- dispute rate alert


def test_check_dispute_rate_raises_one_alert_when_over_20_percent():
    _orders(3, OrderStatus.DISPUTED)
    _orders(7, OrderStatus.COMPLETED)

    assert services.check_dispute_rate() is True
    assert services.check_dispute_rate() is True  # a second run counts up the same open alert
    alert = Alert.objects.get()
    assert (alert.key, alert.severity, alert.occurrences) == ("dispute-rate-24h", "P2", 2)
    assert "30.0% of 10 orders" in alert.title and "threshold 20%" in alert.title


def test_check_dispute_rate_raises_nothing_when_under_20_percent():
    _orders(2, OrderStatus.DISPUTED)
    _orders(8, OrderStatus.COMPLETED)
    _orders(10, OrderStatus.DISPUTED, created_at=ago(hours=30))  # yesterday's spike is not today's rate

    assert services.check_dispute_rate() is False
    assert not Alert.objects.exists()


def test_check_dispute_rate_uses_the_platform_threshold():
    PlatformFlag.objects.filter(key="DISPUTE_RATE_ALERT_PCT").update(value=10)  # seeded at 20 by ops migrations
    _orders(2, OrderStatus.DISPUTED)
    _orders(8, OrderStatus.COMPLETED)

    assert services.check_dispute_rate() is True
    assert Alert.objects.get().key == "dispute-rate-24h"


# ---------------------------------------------------------------- order velocity (runbook 002)


def test_flag_fast_order_makers_flags_more_than_ten_orders_in_two_hours_once():
    fast, steady, banned = f.profile(), f.profile(), f.profile()
    Blacklist.objects.create(wallet=banned.wallet, reason="fraud")
    _orders(11, OrderStatus.FUNDED, buyer=fast, created_at=ago(minutes=30))
    _orders(10, OrderStatus.FUNDED, buyer=steady, created_at=ago(minutes=30))  # ten is the runbook's limit
    _orders(5, OrderStatus.FUNDED, buyer=steady, created_at=ago(hours=3))  # outside the window
    _orders(12, OrderStatus.FUNDED, buyer=banned, created_at=ago(minutes=30))  # already blacklisted

    assert services.flag_fast_order_makers() == 1
    flag = ReviewFlag.objects.get()
    assert (flag.wallet, flag.role) == (fast.wallet, "velocity") and flag.reason.startswith("11 orders created in 2 h")
    assert services.flag_fast_order_makers() == 0, "one open flag per wallet"
    assert Blacklist.objects.count() == 1, "flags, never blacklists"
    assert AuditLog.objects.get(action="flag_for_review").actor_label == "system:order-velocity"
