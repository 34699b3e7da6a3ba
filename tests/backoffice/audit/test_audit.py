"""The audit log is append-only in the database and hash-chained, so a bypassing edit is found."""
from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from backoffice.audit.services import GENESIS_HASH, record_audit

pytestmark = pytest.mark.django_db


def _sql(query: str, params=()) -> None:
    with connection.cursor() as cur:
        cur.execute(query, params)


def _write(n: int, actor=None) -> list[AuditLog]:
    rows = []
    for i in range(n):
        with transaction.atomic():
            rows.append(record_audit(actor=actor, action="test_action", object_type="test", object_id=str(i),
                                     before={"n": i}, after={"n": i + 1, "amount": "1.50"}, reason=f"step {i}"))
    return rows


def _refused(query: str, params=()) -> str:
    with pytest.raises(DatabaseError) as exc, transaction.atomic():
        _sql(query, params)
    return str(exc.value)


def test_record_audit_chains_rows_from_genesis(staff_user):
    first, second = _write(2, actor=staff_user)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.row_hash
    assert len({first.row_hash, second.row_hash}) == 2
    stored = AuditLog.objects.get(pk=first.pk)
    assert (stored.actor, stored.actor_label, stored.before, stored.reason) == (staff_user, "alice", {"n": 0}, "step 0")


@pytest.mark.django_db(transaction=True)
def test_record_audit_outside_transaction_raises():
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="transaction"):
        record_audit(actor=None, action="x")
    assert not AuditLog.objects.exists()


def test_audit_log_update_is_refused():
    (row,) = _write(1)
    assert "append-only" in _refused("UPDATE audit_log SET reason = 'edited' WHERE id = %s", [row.pk])
    row.refresh_from_db()
    assert row.reason == "step 0"


def test_audit_log_orm_update_and_delete_are_refused():
    (row,) = _write(1)
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row.pk).update(reason="edited")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row.pk).delete()
    assert AuditLog.objects.get().reason == "step 0"


def test_audit_log_delete_is_refused():
    _write(2)
    assert "append-only" in _refused("DELETE FROM audit_log")
    assert AuditLog.objects.count() == 2


def test_audit_log_truncate_is_refused_without_the_test_database_setting():
    _write(1)
    _sql("SET CONSTRAINTS ALL IMMEDIATE")  # so TRUNCATE is not refused for pending FK checks instead
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql("SET LOCAL bo.allow_truncate_audit = 'off'")
        _sql("TRUNCATE audit_log")
    assert AuditLog.objects.count() == 1


def test_audit_log_truncate_is_refused_when_only_the_session_sets_the_flag():
    _write(1)
    _sql("SET CONSTRAINTS ALL IMMEDIATE")
    name = connection.settings_dict["NAME"]
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql(f'ALTER DATABASE "{name}" RESET bo.allow_truncate_audit')  # rolled back with the block
        _sql("SET LOCAL bo.allow_truncate_audit = 'on'")
        _sql("TRUNCATE audit_log")
    assert AuditLog.objects.count() == 1


def test_audit_log_truncate_is_allowed_in_the_test_database_only_by_its_setting():
    _write(1)
    _sql("SET CONSTRAINTS ALL IMMEDIATE")
    with transaction.atomic():
        _sql("TRUNCATE audit_log")  # bo.allow_truncate_audit=on, set on the test database by conftest
        assert not AuditLog.objects.exists()
        transaction.set_rollback(True)
    assert AuditLog.objects.count() == 1


def test_verify_audit_chain_accepts_an_intact_chain():
    assert verify_audit_chain().ok  # empty
    _write(5)
    verdict = verify_audit_chain(batch=2)  # several batches
    assert verdict.ok and verdict.rows_checked == 5 and verdict.first_broken_id is None


def _with_triggers_disabled(query: str, params=()) -> None:
    # The deferred foreign-key checks of the rows just written must fire before ALTER TABLE.
    _sql("SET CONSTRAINTS ALL IMMEDIATE")
    _sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
    try:
        _sql(query, params)
    finally:
        _sql("ALTER TABLE audit_log ENABLE TRIGGER USER")


def test_verify_audit_chain_names_the_first_edited_row():
    rows = _write(4)
    _with_triggers_disabled("UPDATE audit_log SET reason = 'nothing to see' WHERE id = %s", [rows[1].pk])
    _with_triggers_disabled("UPDATE audit_log SET action = 'other' WHERE id = %s", [rows[3].pk])
    verdict = verify_audit_chain()
    assert not verdict.ok
    assert verdict.first_broken_id == rows[1].pk
    assert verdict.rows_checked == 2
    assert "row_hash" in verdict.problem


def test_verify_audit_chain_names_the_row_after_a_deleted_one():
    rows = _write(3)
    _with_triggers_disabled("DELETE FROM audit_log WHERE id = %s", [rows[1].pk])
    verdict = verify_audit_chain()
    assert (verdict.ok, verdict.first_broken_id) == (False, rows[2].pk)
    assert "prev_hash" in verdict.problem


def test_verify_audit_chain_detects_edited_json_payload():
    rows = _write(2)
    _with_triggers_disabled("""UPDATE audit_log SET after = jsonb_set(after::jsonb, '{amount}', '"9.99"')
                               WHERE id = %s""", [rows[0].pk])
    assert verify_audit_chain().first_broken_id == rows[0].pk


def test_audit_log_admin_filters_by_actor(client, django_user_model):
    staff = django_user_model.objects.create_user("auditor", is_staff=True, is_superuser=True)
    with transaction.atomic():
        record_audit(actor=staff, action="one", reason="by a person")
        record_audit(actor="system:timeouts", action="two", reason="by the rules")
        record_audit(actor="anonymous:mallory", action="login_failed", reason="wrong password")
    client.force_login(staff)
    for value, expected, absent in (("auditor", "by a person", "by the rules"),
                                    ("system:", "by the rules", "wrong password"),
                                    ("anonymous:", "wrong password", "by a person")):
        body = client.get(f"/admin/audit/auditlog/?actor={value}").content.decode()
        assert expected in body and absent not in body, value


def test_audit_log_action_and_type_filters_list_each_value_once_from_the_index(client, django_user_model):
    from django.contrib import admin
    from django.test import RequestFactory

    from backoffice.admin_utils import IndexedValuesFilter

    staff = django_user_model.objects.create_user("auditor", is_staff=True, is_superuser=True)
    with transaction.atomic():
        for action, object_type in (("b_action", "order"), ("a_action", "order"), ("b_action", ""),
                                    ("c_action", "wallet"), ("a_action", "wallet")):
            record_audit(actor=staff, action=action, object_type=object_type, object_id="1", reason="r")
    actions = set(AuditLog.objects.values_list("action", flat=True))
    request = RequestFactory().get("/")
    request.user = staff
    model_admin = admin.site._registry[AuditLog]
    for field, expected in (("action", sorted(actions)),
                            ("object_type", sorted(set(AuditLog.objects.values_list("object_type", flat=True))))):
        spec = IndexedValuesFilter(AuditLog._meta.get_field(field), request, {}, AuditLog, model_admin, field)
        assert spec.lookup_choices == expected
    client.force_login(staff)
    page = client.get("/admin/audit/auditlog/?action=c_action").content.decode()
    assert "?action=a_action" in page and "?action=b_action" in page
    assert page.count('<td class="field-action">') == 1
