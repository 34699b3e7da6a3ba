"""Secret rotation log (runbook §11, RB-06): who/when/why/steps and a fingerprint, never the value."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DatabaseError, connection, transaction
from django.urls import reverse
from django.utils import timezone

from backoffice.audit.models import AuditLog
from ops.console.services import record_secret_rotation, update_secret_schedule
from ops.models import SecretRotation, SecretSchedule

NEW_VALUE = "n3w-Secret-Value-that-must-never-be-stored-7f3a"
STEPS = ["Generate a new secret (openssl rand -hex 32)", "Update JWT_SECRET in the API environment",
         "Rolling restart of the API", "Verify /health"]


@pytest.fixture
def jwt(db) -> SecretSchedule:
    return SecretSchedule.objects.create(name="TEST_JWT_SECRET", interval_days=30, procedure="RB-06",
                                         impact="All sessions invalidated", steps=STEPS)


def rows_as_text(table: str) -> list[str]:
    """Every column of every row, as PostgreSQL renders the whole row."""
    with connection.cursor() as cur:
        cur.execute(f"SELECT t::text FROM {table} t")
        return [r[0] for r in cur.fetchall()]


def test_secrets_rotation_keeps_who_when_why_steps_and_a_fingerprint_never_the_value(jwt, staff_user):
    before = timezone.now()
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS,
                                      note="monthly", new_value=NEW_VALUE)
    rotation.refresh_from_db()
    assert rotation.rotated_by == staff_user
    assert before <= rotation.rotated_at <= timezone.now()
    assert rotation.reason == "scheduled" and rotation.note == "monthly"
    assert rotation.steps_confirmed == STEPS
    assert rotation.fingerprint == hashlib.sha256(NEW_VALUE.encode()).hexdigest()[:12]
    assert len(rotation.fingerprint) == 12 and int(rotation.fingerprint, 16) >= 0

    audit = AuditLog.objects.get(action="record_secret_rotation")
    assert audit.actor == staff_user and audit.object_id == str(jwt.pk)
    assert audit.after["fingerprint"] == rotation.fingerprint and audit.after["reason"] == "scheduled"

    for table in ("ops_secret_rotations", "audit_log", "ops_secret_schedules"):
        for row in rows_as_text(table):
            assert NEW_VALUE not in row, table
            assert hashlib.sha256(NEW_VALUE.encode()).hexdigest() not in row, table  # not even the full hash


def test_secrets_rotation_without_a_value_has_no_fingerprint(jwt, staff_user):
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS)
    assert rotation.fingerprint == ""


def test_secrets_rotation_missing_steps_is_refused_with_the_field_named(jwt, staff_user):
    with pytest.raises(ValidationError) as exc:
        record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS[:2],
                               new_value=NEW_VALUE)
    assert set(exc.value.message_dict) == {"steps_confirmed"}
    assert STEPS[2] in exc.value.message_dict["steps_confirmed"][0]
    assert STEPS[3] in exc.value.message_dict["steps_confirmed"][0]
    assert not SecretRotation.objects.exists() and not AuditLog.objects.filter(action="record_secret_rotation")


def test_secrets_compromise_without_a_note_is_refused_with_the_field_named(jwt, staff_user):
    with pytest.raises(ValidationError) as exc:
        record_secret_rotation(actor=staff_user, secret=jwt, reason="compromise", steps_confirmed=STEPS, note="  ")
    assert set(exc.value.message_dict) == {"note"}
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="compromise", steps_confirmed=STEPS,
                                      note="token seen in a public paste at 09:12")
    assert rotation.reason == "compromise"


def test_secrets_unknown_reason_is_refused(jwt, staff_user):
    with pytest.raises(ValidationError) as exc:
        record_secret_rotation(actor=staff_user, secret=jwt, reason="bored", steps_confirmed=STEPS)
    assert set(exc.value.message_dict) == {"reason"}


def test_secrets_rotation_needs_the_permission(jwt, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", password="clerk-password-1", is_staff=True)
    with pytest.raises(PermissionDenied):
        record_secret_rotation(actor=clerk, secret=jwt, reason="scheduled", steps_confirmed=STEPS)


def test_secrets_next_due_date_moves_with_a_rotation(jwt, staff_user):
    assert jwt.state == "overdue"  # never recorded: due now
    SecretSchedule.objects.filter(pk=jwt.pk).update(last_rotated_at=timezone.now() - timedelta(days=40))
    jwt.refresh_from_db()
    assert jwt.state == "overdue"
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS)
    jwt.refresh_from_db()
    assert jwt.last_rotated_at == rotation.rotated_at
    assert jwt.next_due == rotation.rotated_at + timedelta(days=30)
    assert jwt.state == "ok"
    SecretSchedule.objects.filter(pk=jwt.pk).update(last_rotated_at=timezone.now() - timedelta(days=25))
    jwt.refresh_from_db()
    assert jwt.state == "due"  # within warn_days (7) of the due date


def test_secrets_schedule_update_is_audited_and_refuses_a_zero_interval(jwt, staff_user):
    with pytest.raises(ValidationError) as exc:
        update_secret_schedule(actor=staff_user, secret=jwt, interval_days=0, reason="typo")
    assert set(exc.value.message_dict) == {"interval_days"}
    update_secret_schedule(actor=staff_user, secret=jwt, interval_days=14, reason="after the incident")
    jwt.refresh_from_db()
    assert jwt.interval_days == 14
    audit = AuditLog.objects.get(action="update_secret_schedule")
    assert audit.before == {"interval_days": 30} and audit.after == {"interval_days": 14}
    update_secret_schedule(actor=staff_user, secret=jwt, interval_days=None, reason="as needed")
    jwt.refresh_from_db()
    assert jwt.state == "as needed" and jwt.next_due is None


def test_secrets_rotations_are_append_only(jwt, staff_user):
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        SecretRotation.objects.filter(pk=rotation.pk).update(note="rewritten")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        SecretRotation.objects.filter(pk=rotation.pk).delete()
    assert SecretRotation.objects.get(pk=rotation.pk).note == ""


def test_secrets_admin_rotate_page_records_a_rotation(jwt, staff_client, staff_user):
    url = reverse("admin:ops_secretschedule_rotate", args=[jwt.pk])
    page = staff_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "TEST_JWT_SECRET" in html and "overdue" in html
    for step in STEPS:
        assert step in html

    response = staff_client.post(url, {"reason": "scheduled", "steps_confirmed": STEPS, "note": "monthly",
                                       "new_value": NEW_VALUE}, follow=True)
    assert response.redirect_chain[-1][0] == reverse("admin:ops_secretschedule_changelist")
    html = response.content.decode()
    rotation = SecretRotation.objects.get(secret=jwt)
    assert rotation.rotated_by == staff_user and rotation.fingerprint in html
    assert NEW_VALUE not in html
    history = staff_client.get(url).content.decode()
    assert rotation.fingerprint in history and NEW_VALUE not in history


def test_secrets_admin_rotate_page_shows_the_refusal_on_the_field(jwt, staff_client):
    url = reverse("admin:ops_secretschedule_rotate", args=[jwt.pk])
    response = staff_client.post(url, {"reason": "scheduled", "steps_confirmed": STEPS[:1], "new_value": NEW_VALUE})
    assert response.status_code == 200
    assert "Confirm every runbook step first" in response.content.decode()
    assert NEW_VALUE not in response.content.decode()  # the password field is not echoed back
    assert not SecretRotation.objects.exists()


def test_secrets_admin_changelist_highlights_overdue(jwt, staff_client):
    SecretSchedule.objects.create(name="TEST_FRESH_KEY", interval_days=365, last_rotated_at=timezone.now())
    html = staff_client.get(reverse("admin:ops_secretschedule_changelist")).content.decode()
    assert '<strong style="color:#ba2121">overdue</strong>' in html
    assert html.count('style="color:#ba2121"') == SecretSchedule.objects.filter(
        pk__in=[s.pk for s in SecretSchedule.objects.all() if s.state == "overdue"]).count()


def test_secrets_admin_rotations_cannot_be_edited_or_deleted(jwt, staff_client, staff_user):
    rotation = record_secret_rotation(actor=staff_user, secret=jwt, reason="scheduled", steps_confirmed=STEPS)
    assert staff_client.get(reverse("admin:ops_secretrotation_delete", args=[rotation.pk])).status_code == 403
    assert staff_client.post(reverse("admin:ops_secretrotation_change", args=[rotation.pk]),
                             {"note": "x"}).status_code == 403
