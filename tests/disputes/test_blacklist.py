"""The blacklist: audited services, a form that names the bad field, and a profile flag that always agrees."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from backoffice.audit.models import AuditLog
from chain.models import UserProfile
from disputes.forms import BlacklistAddForm
from disputes.models import Blacklist, BlacklistSource
from disputes.services import blacklist_wallet, lift_blacklist_entry
from tests import factories as f

pytestmark = pytest.mark.django_db

CHECKSUMMED = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
LOWER = CHECKSUMMED.lower()


def _sql(query: str, params=()) -> None:
    with connection.cursor() as cur:
        cur.execute(query, params)


def _flag(wallet: str) -> bool:
    return UserProfile.objects.get(wallet=wallet).is_blacklisted


# ---------------------------------------------------------------- services


def test_blacklist_wallet_flags_profile_and_writes_one_audit_row(staff_user):
    profile = f.profile(LOWER)
    entry = blacklist_wallet(actor=staff_user, wallet=CHECKSUMMED, reason="  High dispute rate  ")

    assert (entry.wallet, entry.reason, entry.source, entry.created_by) == (LOWER, "High dispute rate", "manual",
                                                                           staff_user)
    profile.refresh_from_db()
    assert profile.is_blacklisted
    audit = AuditLog.objects.exclude(object_type="auth").get()
    assert (audit.actor, audit.actor_label, audit.action) == (staff_user, "alice", "blacklist_wallet")
    assert (audit.object_type, audit.object_id, audit.reason) == ("disputes.blacklist", str(entry.pk),
                                                                 "High dispute rate")
    assert audit.before is None
    assert audit.after["wallet"] == LOWER and audit.after["lifted_at"] is None


def test_lift_blacklist_entry_clears_flag_and_writes_before_and_after(staff_user):
    f.profile(LOWER)
    entry = blacklist_wallet(actor=staff_user, wallet=LOWER, reason="High dispute rate")
    lifted = lift_blacklist_entry(actor=staff_user, entry=entry, reason="Appeal accepted")

    assert lifted.lifted_at is not None and lifted.lifted_by == staff_user and lifted.lift_reason == "Appeal accepted"
    assert not _flag(LOWER)
    assert Blacklist.objects.filter(pk=entry.pk).exists()  # history is kept
    audit = AuditLog.objects.get(action="lift_blacklist_entry")
    assert audit.before["lifted_at"] is None
    assert audit.after["lifted_at"] is not None and audit.after["lift_reason"] == "Appeal accepted"
    assert audit.reason == "Appeal accepted" and audit.actor == staff_user
    assert AuditLog.objects.exclude(object_type="auth").count() == 2


def test_blacklist_wallet_after_lift_blacklists_again(staff_user):
    f.profile(LOWER)
    first = blacklist_wallet(actor=staff_user, wallet=LOWER, reason="Spam")
    lift_blacklist_entry(actor=staff_user, entry=first, reason="Mistake")
    blacklist_wallet(actor=staff_user, wallet=LOWER, reason="Spam again")
    assert _flag(LOWER)
    assert Blacklist.objects.filter(wallet=LOWER).count() == 2


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"wallet": "0x1234"}, "wallet"),
    ({"wallet": "0xdac17F958D2ee523a2206206994597C13D831ec7"}, "wallet"),  # wrong EIP-55 checksum
    ({"reason": "   "}, "reason"),
    ({"reason": ""}, "reason"),
    ({"reason": "x" * 2001}, "reason"),  # refused, never cut (issue 22, finding 3)
    ({"source": "rumour"}, "source"),
    ({"expires_at": timezone.now() - timedelta(minutes=1)}, "expires_at"),
])
def test_blacklist_wallet_refuses_bad_input_naming_the_field_and_writes_nothing(staff_user, kwargs, field):
    f.profile(LOWER)
    with pytest.raises(ValidationError) as exc:
        blacklist_wallet(actor=staff_user, **{"wallet": LOWER, "reason": "High dispute rate", **kwargs})
    assert list(exc.value.message_dict) == [field]
    assert not Blacklist.objects.exists()
    assert not AuditLog.objects.exclude(object_type="auth").exists()
    assert not _flag(LOWER)


def test_blacklist_wallet_refuses_duplicate_and_writes_nothing(staff_user):
    blacklist_wallet(actor=staff_user, wallet=LOWER, reason="High dispute rate")
    with pytest.raises(ValidationError) as exc:
        blacklist_wallet(actor=staff_user, wallet=CHECKSUMMED, reason="Again")
    assert list(exc.value.message_dict) == ["wallet"]
    assert "already blacklisted" in exc.value.message_dict["wallet"][0]
    assert Blacklist.objects.count() == 1
    assert AuditLog.objects.exclude(object_type="auth").count() == 1


def test_lift_blacklist_entry_refuses_empty_reason_and_second_lift(staff_user):
    entry = blacklist_wallet(actor=staff_user, wallet=LOWER, reason="High dispute rate")
    with pytest.raises(ValidationError) as exc:
        lift_blacklist_entry(actor=staff_user, entry=entry, reason=" ")
    assert list(exc.value.message_dict) == ["reason"]
    lift_blacklist_entry(actor=staff_user, entry=entry, reason="Appeal")
    with pytest.raises(ValidationError) as exc:
        lift_blacklist_entry(actor=staff_user, entry=entry, reason="Appeal again")
    assert list(exc.value.message_dict) == ["wallet"]
    assert AuditLog.objects.exclude(object_type="auth").count() == 2


def test_blacklist_wallet_by_system_actor_records_label():
    entry = blacklist_wallet(actor="system:dispute_rate", wallet=LOWER, reason="Automatic", source="automatic")
    assert entry.created_by is None
    audit = AuditLog.objects.exclude(object_type="auth").get()
    assert (audit.actor, audit.actor_label) == (None, "system:dispute_rate")


# ---------------------------------------------------------------- the form


def test_blacklist_add_form_cleans_checksummed_wallet():
    form = BlacklistAddForm(data={"wallet": CHECKSUMMED, "reason": " Fraud ", "source": "manual"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["wallet"] == LOWER
    assert form.cleaned_data["reason"] == "Fraud"


@pytest.mark.parametrize(("data", "field"), [
    ({"wallet": "0x12"}, "wallet"),
    ({"wallet": "0xdac17F958D2ee523a2206206994597C13D831ec7"}, "wallet"),
    ({"wallet": ""}, "wallet"),
    ({"reason": "   "}, "reason"),
    ({"source": "rumour"}, "source"),
    ({"expires_at": "2000-01-01 00:00"}, "expires_at"),
])
def test_blacklist_add_form_refuses_bad_input_on_the_field(data, field):
    form = BlacklistAddForm(data={"wallet": LOWER, "reason": "Fraud", "source": "manual", **data})
    assert not form.is_valid()
    assert list(form.errors) == [field]


def test_blacklist_add_form_refuses_already_blacklisted_wallet(staff_user):
    blacklist_wallet(actor=staff_user, wallet=LOWER, reason="Fraud")
    form = BlacklistAddForm(data={"wallet": CHECKSUMMED, "reason": "Again", "source": "manual"})
    assert not form.is_valid()
    assert "already blacklisted" in form.errors["wallet"][0]


# ---------------------------------------------------------------- the flag agrees with the table, also for raw SQL


def test_raw_insert_into_blacklist_flags_profile():
    f.profile(LOWER)
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'High dispute rate', 'manual')", [CHECKSUMMED])
    assert _flag(LOWER)


def test_raw_lift_and_unlift_of_blacklist_row_follow_on_profile():
    f.profile(LOWER)
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'manual')", [LOWER])
    _sql("UPDATE blacklist SET lifted_at = now() WHERE wallet = %s", [LOWER])
    assert not _flag(LOWER)
    _sql("UPDATE blacklist SET lifted_at = NULL WHERE wallet = %s", [LOWER])
    assert _flag(LOWER)


def test_raw_delete_from_blacklist_clears_profile():
    f.profile(LOWER)
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'manual')", [LOWER])
    _sql("DELETE FROM blacklist WHERE wallet = %s", [LOWER])
    assert not _flag(LOWER)


def test_raw_update_of_blacklist_wallet_moves_the_flag():
    other = f.wallet()
    f.profile(LOWER), f.profile(other)
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'manual')", [LOWER])
    _sql("UPDATE blacklist SET wallet = %s WHERE wallet = %s", [other, LOWER])
    assert not _flag(LOWER)
    assert _flag(other)


def test_lifted_row_does_not_clear_flag_of_active_row():
    f.profile(LOWER)
    _sql("INSERT INTO blacklist (wallet, reason, source, lifted_at) VALUES (%s, 'old', 'manual', now())", [LOWER])
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'new', 'manual')", [LOWER])
    _sql("DELETE FROM blacklist WHERE lifted_at IS NOT NULL")
    assert _flag(LOWER)


def test_profile_created_after_blacklisting_is_flagged():
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'manual')", [LOWER])
    profile = f.profile(CHECKSUMMED)
    profile.refresh_from_db()
    assert profile.is_blacklisted
    _sql("INSERT INTO user_profiles (wallet) VALUES (%s)", [f.wallet()])
    assert UserProfile.objects.blacklisted().get() == profile


def test_raw_update_cannot_set_flag_of_non_blacklisted_wallet():
    profile = f.profile(LOWER)
    _sql("UPDATE user_profiles SET is_blacklisted = true WHERE wallet = %s", [LOWER])
    profile.refresh_from_db()
    assert not profile.is_blacklisted


def test_raw_update_cannot_clear_flag_of_blacklisted_wallet():
    profile = f.profile(LOWER)
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'manual')", [LOWER])
    _sql("UPDATE user_profiles SET is_blacklisted = false WHERE wallet = %s", [LOWER])
    profile.refresh_from_db()
    assert profile.is_blacklisted


def test_blacklist_active_queryset_excludes_lifted(staff_user):
    entry = blacklist_wallet(actor=staff_user, wallet=LOWER, reason="x", source=BlacklistSource.IMPORT)
    assert list(Blacklist.objects.active()) == [entry]
    lift_blacklist_entry(actor=staff_user, entry=entry, reason="y")
    assert not Blacklist.objects.active().exists()
