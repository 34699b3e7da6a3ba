"""The audit log under concurrent writers, and `verify_audit_log` on an intact and on an edited chain."""
from __future__ import annotations

import io
import threading

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from backoffice.audit.services import GENESIS_HASH, record_audit

pytestmark = pytest.mark.django_db(transaction=True)

WRITERS = 20


def write_concurrently(n: int) -> list[Exception]:
    barrier = threading.Barrier(n)
    errors: list[Exception] = []

    def writer(i: int) -> None:
        try:
            barrier.wait(timeout=20)
            with transaction.atomic():
                record_audit(actor=f"system:writer-{i}", action="concurrency_test", object_type="test",
                             object_id=str(i), after={"writer": i}, reason="twenty at once")
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return errors


def test_record_audit_twenty_concurrent_writers_leave_one_unbroken_chain():
    assert write_concurrently(WRITERS) == []
    rows = list(AuditLog.objects.order_by("id"))
    assert len(rows) == WRITERS
    assert {r.object_id for r in rows} == {str(i) for i in range(WRITERS)}
    assert rows[0].prev_hash == GENESIS_HASH
    for previous, row in zip(rows, rows[1:], strict=False):
        assert row.prev_hash == previous.row_hash
    assert len({r.prev_hash for r in rows}) == WRITERS  # no fork: no two rows claim one predecessor
    verdict = verify_audit_chain()
    assert verdict.ok and verdict.rows_checked == WRITERS


def test_verify_audit_log_command_passes_an_intact_chain_and_names_an_edited_row():
    assert write_concurrently(5) == []
    out = io.StringIO()
    call_command("verify_audit_log", stdout=out)
    assert "intact: 5 rows" in out.getvalue()

    edited = AuditLog.objects.order_by("id")[2]
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE audit_log DISABLE TRIGGER USER")
        try:
            cur.execute("UPDATE audit_log SET reason = 'nothing to see here' WHERE id = %s", [edited.pk])
        finally:
            cur.execute("ALTER TABLE audit_log ENABLE TRIGGER USER")
    with pytest.raises(CommandError, match=f"broken at row {edited.pk}: row content"):
        call_command("verify_audit_log")
    # The triggers are back: the application's connection cannot repair (or hide) the edit.
    with pytest.raises(Exception, match="(?i)append-only|not allowed|refuse"):
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("UPDATE audit_log SET reason = 'twenty at once' WHERE id = %s", [edited.pk])
