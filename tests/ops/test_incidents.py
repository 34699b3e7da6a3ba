"""Incidents: lifecycle with roles, append-only timeline, links, the drafted post-mortem, the monthly report."""
from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import pytest
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.urls import reverse
from django.utils import timezone

from backoffice.audit.models import AuditLog
from ops.console.services import (
    add_incident_event,
    advance_incident,
    complete_postmortem,
    monthly_incident_report,
    open_incident,
)
from ops.models import ContractAction, Incident, IncidentEvent
from tests import factories

UTC = dt_timezone.utc


@pytest.fixture
def commander(django_user_model):
    return django_user_model.objects.create_user("carol", password="carol-password-1", is_staff=True,
                                                 is_superuser=True)


@pytest.fixture
def incident(staff_user) -> Incident:
    return open_incident(actor=staff_user, title="bsc escrow paused unexpectedly", severity="P1",
                         started_at=timezone.now() - timedelta(minutes=30), summary="Trading blocked on BSC.",
                         runbook="RB-05")


def pause_action(user) -> ContractAction:
    return ContractAction.objects.create(chain="bsc", kind="pause", description="pause()", to_address="0x" + "e5" * 20,
                                         calldata="0x8456cb59", calldata_hash="0x" + "ab" * 32,
                                         reason="RB-05: stop trading", proposed_by=user)


def texts(incident: Incident) -> list[str]:
    return list(incident.timeline.values_list("text", flat=True))


def test_incidents_open_starts_detected_with_the_first_sign_on_the_timeline(incident, staff_user):
    assert incident.status == "detected" and incident.created_by == staff_user
    assert incident.detected_at - incident.started_at >= timedelta(minutes=30)
    assert texts(incident) == ["First sign of the issue", "Incident opened (P1)"]
    assert AuditLog.objects.filter(action="open_incident", object_id=str(incident.pk)).count() == 1


def test_incidents_open_refuses_bad_input_with_the_field_named(staff_user):
    for kwargs, field in (({"title": " ", "severity": "P1"}, "title"), ({"title": "x", "severity": "P5"}, "severity"),
                          ({"title": "x", "severity": "P1", "started_at": timezone.now() + timedelta(hours=1)},
                           "started_at"),
                          ({"title": "x", "severity": "P1", "started_at": timezone.now() - timedelta(days=400)},
                           "started_at"),
                          ({"title": "x", "severity": "P1",
                            "started_at": datetime(1, 1, 1, tzinfo=dt_timezone(timedelta(hours=14)))}, "started_at")):
        with pytest.raises(ValidationError) as exc:
            open_incident(actor=staff_user, **kwargs)
        assert set(exc.value.message_dict) == {field}
    assert not Incident.objects.exists()


def test_incidents_full_lifecycle_drafts_the_postmortem_with_the_timeline(incident, staff_user, commander):
    order = factories.order(status="disputed")
    action = pause_action(staff_user)
    incident.affected_orders.add(order)
    incident.contract_actions.add(action)

    with pytest.raises(ValidationError) as exc:
        advance_incident(actor=staff_user, incident=incident, to="triaged")
    assert set(exc.value.message_dict) == {"commander"}
    incident = advance_incident(actor=staff_user, incident=incident, to="triaged", commander=commander,
                                ops_lead=staff_user, comms_lead=commander, severity="P0", note="funds may be at risk")
    assert incident.status == "triaged" and incident.severity == "P0" and incident.triaged_at
    assert (incident.commander, incident.ops_lead, incident.comms_lead) == (commander, staff_user, commander)

    add_incident_event(actor=commander, incident=incident, text="Owner key holders paged")
    incident = advance_incident(actor=commander, incident=incident, to="mitigated", note="unpaused after review")
    assert incident.mitigated_at
    incident = advance_incident(actor=commander, incident=incident, to="resolved")
    assert incident.status == "resolved" and incident.resolved_at
    assert incident.postmortem_due_at == incident.resolved_at + timedelta(hours=48)

    draft = incident.postmortem
    assert draft.startswith("# Incident Post-Mortem: bsc escrow paused unexpectedly")
    assert "**Severity**: P0" in draft and "**Commander**: carol" in draft
    assert "Trading blocked on BSC." in draft
    assert f"Orders affected: {order}" in draft
    assert f"#{action.pk} pause()" in draft
    timeline = list(incident.timeline.all())
    assert [e.text for e in timeline] == ["First sign of the issue", "Incident opened (P1)",
                                          "Triaged: funds may be at risk", "Owner key holders paged",
                                          "Mitigated: unpaused after review", "Resolved"]
    for event in timeline:
        assert f"| {event.at:%Y-%m-%d %H:%M} | {event.text} |" in draft
    assert draft.index("First sign of the issue") < draft.index("Owner key holders paged") < draft.index("| Resolved |")

    with pytest.raises(ValidationError) as exc:
        complete_postmortem(actor=commander, incident=incident, text=draft)  # the template, unfilled
    assert set(exc.value.message_dict) == {"postmortem"}
    done = draft.replace("[Technical explanation of what caused the incident.]",
                         "A mistaken pause proposal was approved.")
    incident = complete_postmortem(actor=commander, incident=incident, text=done)
    assert incident.status == "postmortem" and incident.postmortem_done_at and incident.postmortem == done.strip()
    assert texts(incident)[-1] == "Post-mortem completed"
    assert [a.after["status"] for a in AuditLog.objects.filter(action="advance_incident").order_by("id")] == \
        ["triaged", "mitigated", "resolved"]

    with pytest.raises(ValidationError):
        advance_incident(actor=commander, incident=incident, to="resolved")


def test_incidents_wrong_transitions_are_refused(incident, staff_user, commander):
    for to in ("mitigated", "resolved", "postmortem", "detected", "closed"):
        with pytest.raises(ValidationError) as exc:
            advance_incident(actor=staff_user, incident=incident, to=to, commander=commander)
        assert "triaged" in exc.value.message_dict["status"][0]
    incident = advance_incident(actor=staff_user, incident=incident, to="triaged", commander=commander)
    with pytest.raises(ValidationError):
        advance_incident(actor=staff_user, incident=incident, to="triaged", commander=commander)
    with pytest.raises(ValidationError):
        advance_incident(actor=staff_user, incident=incident, to="resolved")
    with pytest.raises(ValidationError):
        complete_postmortem(actor=staff_user, incident=incident, text="## Root Cause\nfilled")
    incident.refresh_from_db()
    assert incident.status == "triaged"


@pytest.mark.parametrize("severity,due", [("P0", True), ("P1", True), ("P2", False), ("P3", False)])
def test_incidents_postmortem_due_48h_only_for_p0_and_p1(staff_user, commander, severity, due):
    incident = open_incident(actor=staff_user, title=f"a {severity}", severity=severity)
    for to in ("triaged", "mitigated", "resolved"):
        incident = advance_incident(actor=staff_user, incident=incident, to=to, commander=commander)
    assert incident.postmortem.startswith(f"# Incident Post-Mortem: a {severity}")  # drafted either way
    assert (incident.postmortem_due_at == incident.resolved_at + timedelta(hours=48)) if due else \
        incident.postmortem_due_at is None


def test_incidents_timeline_is_append_only(incident, staff_user):
    event = add_incident_event(actor=staff_user, incident=incident, text="Checked the RPC providers")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        IncidentEvent.objects.filter(pk=event.pk).update(text="nothing happened")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        IncidentEvent.objects.filter(pk=event.pk).delete()
    with pytest.raises(ValidationError) as exc:
        add_incident_event(actor=staff_user, incident=incident, text="   ")
    assert set(exc.value.message_dict) == {"text"}
    assert texts(incident)[-1] == "Checked the RPC providers"


def test_incidents_link_affected_orders_and_contract_actions(incident, staff_user):
    orders = [factories.order(status="disputed") for _ in range(2)]
    action = pause_action(staff_user)
    incident.affected_orders.add(*orders)
    incident.contract_actions.add(action)
    assert set(orders[0].incidents.all()) == {incident}
    assert set(action.incidents.all()) == {incident}


# ------------------------------------------------------------------------------------------ admin


def test_incidents_admin_open_update_and_report(staff_client, staff_user, commander):
    response = staff_client.post(reverse("admin:ops_incident_open"), {
        "title": "Redis out of memory", "severity": "P1", "runbook": "RB-08", "summary": "queues stalled"})
    incident = Incident.objects.get(title="Redis out of memory")
    assert response.status_code == 302 and response["Location"] == reverse("admin:ops_incident_change",
                                                                           args=[incident.pk])
    update = reverse("admin:ops_incident_update", args=[incident.pk])

    page = staff_client.post(update, {"op": "triaged", "text": ""}, follow=True).content.decode()
    assert "Triage assigns an incident commander." in page
    staff_client.post(update, {"op": "triaged", "commander": commander.pk, "text": "on it"})
    staff_client.post(update, {"op": "event", "text": "Raised maxmemory to 1 GB"})
    staff_client.post(update, {"op": "mitigated", "text": ""})
    staff_client.post(update, {"op": "resolved", "text": ""})
    incident.refresh_from_db()
    assert incident.status == "resolved" and incident.commander == commander

    page = staff_client.get(reverse("admin:ops_incident_change", args=[incident.pk])).content.decode()
    assert "Raised maxmemory to 1 GB" in page and "post-mortem due" in page
    assert "Incident Post-Mortem: Redis out of memory" in page

    changelist = staff_client.get(reverse("admin:ops_incident_changelist")).content.decode()
    assert "Redis out of memory" in changelist and "due " in changelist

    now = timezone.now()
    report = staff_client.get(reverse("admin:ops_incident_report"), {"year": now.year, "month": now.month})
    assert report.status_code == 200
    assert "<td>P1</td><td>1</td><td>1</td>" in report.content.decode()
    bad = staff_client.get(reverse("admin:ops_incident_report"), {"year": "x", "month": "13"}, follow=True)
    assert bad.status_code == 200 and "ear and month must be numbers" in bad.content.decode()


# ------------------------------------------------------------------------------------------ monthly report


def incident_row(user, severity: str, started: datetime, detect_after: int, resolve_after: int | None) -> Incident:
    detected = started + timedelta(minutes=detect_after)
    return Incident.objects.create(
        title=f"{severity} at {started:%d %H:%M}", severity=severity, started_at=started, detected_at=detected,
        resolved_at=None if resolve_after is None else detected + timedelta(minutes=resolve_after),
        status="detected" if resolve_after is None else "resolved", created_by=user)


def test_incidents_monthly_report_counts_by_severity_with_mttd_and_mttr(staff_user):
    t = lambda d, h=10, m=0: datetime(2025, 3, d, h, m, tzinfo=UTC)  # noqa: E731
    incident_row(staff_user, "P1", t(3), 10, 60)
    incident_row(staff_user, "P1", t(9, 12), 30, 120)
    incident_row(staff_user, "P1", t(20), 20, None)  # unresolved: counts for MTTD, not MTTR
    incident_row(staff_user, "P0", t(15), 5, 15)
    incident_row(staff_user, "P3", t(31, 23, 50), 9, 30)  # detected 23:59 on the last day: in March
    incident_row(staff_user, "P3", t(31, 23, 55), 5, 30)  # detected 00:00 on 1 April: not in March
    incident_row(staff_user, "P2", datetime(2025, 2, 28, 23, 0, tzinfo=UTC), 30, 10)  # February

    report = monthly_incident_report(2025, 3)

    assert report == {
        "P0": {"count": 1, "resolved": 1, "mttd_minutes": 5.0, "mttr_minutes": 15.0},
        "P1": {"count": 3, "resolved": 2, "mttd_minutes": 20.0, "mttr_minutes": 90.0},
        "P2": {"count": 0, "resolved": 0, "mttd_minutes": None, "mttr_minutes": None},
        "P3": {"count": 1, "resolved": 1, "mttd_minutes": 9.0, "mttr_minutes": 30.0},
    }
    assert monthly_incident_report(2025, 4)["P3"]["count"] == 1
    assert monthly_incident_report(2025, 2)["P2"] == {"count": 1, "resolved": 1, "mttd_minutes": 30.0,
                                                      "mttr_minutes": 10.0}


def test_incidents_monthly_report_december_ends_at_new_year(staff_user):
    incident_row(staff_user, "P2", datetime(2025, 12, 31, 23, 0, tzinfo=UTC), 30, 45)
    incident_row(staff_user, "P2", datetime(2026, 1, 1, 0, 0, tzinfo=UTC), 1, 1)
    assert monthly_incident_report(2025, 12)["P2"]["count"] == 1
    assert monthly_incident_report(2026, 1)["P2"]["count"] == 1


def test_incident_page_edits_title_summary_and_links_audited(incident, staff_client):
    """The incident's own page saves an edited title, summary and linked orders, and audits what changed."""
    order = factories.order()
    url = reverse("admin:ops_incident_change", args=[incident.pk])
    response = staff_client.post(url, {"title": "bsc escrow paused by the guardian", "runbook": "RB-05",
                                       "summary": "Paused at 12:07 UTC.", "affected_orders": str(order.pk),
                                       "alerts": ""})
    assert response.status_code == 302, response.content.decode()[:2000]
    incident.refresh_from_db()
    assert incident.title == "bsc escrow paused by the guardian" and incident.summary == "Paused at 12:07 UTC."
    assert list(incident.affected_orders.all()) == [order]
    row = AuditLog.objects.filter(action="change_incident").get()
    assert row.after["title"] == "bsc escrow paused by the guardian" and "affected_orders" in row.after
