"""Operations console writes: secret rotations, incidents and their timelines, post-mortems, platform flags, and
ending idle database connections (RB-02)."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from ops.models import (
    INCIDENT_FLOW,
    Incident,
    IncidentEvent,
    IncidentStatus,
    PlatformFlag,
    RotationReason,
    SecretRotation,
    SecretSchedule,
)

from .selectors import IDLE_LONG

POSTMORTEM_WINDOW = timedelta(hours=48)
POSTMORTEM_SEVERITIES = ("P0", "P1")


def fingerprint(value: str) -> str:
    """A short SHA-256 prefix: enough to tell two values apart, useless to recover one."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@sensitive_variables("new_value")
def record_secret_rotation(*, actor: Any, secret: SecretSchedule, reason: str, steps_confirmed: list[str],
                           note: str = "", new_value: str | None = None) -> SecretRotation:
    """Record a rotation (RB-06, §11). The new value, when given, is reduced to a fingerprint and dropped.

    Every runbook step of the secret must be confirmed; a suspected compromise needs a note.
    """
    require_perm(actor, "ops.add_secretrotation", "record secret rotations", allow_system=False)
    if reason not in RotationReason.values:
        raise ValidationError({"reason": "Choose scheduled rotation or suspected compromise."})
    missing = [s for s in secret.steps if s not in (steps_confirmed or [])]
    if missing:
        raise ValidationError({"steps_confirmed": f"Confirm every runbook step first; missing: {'; '.join(missing)}."})
    note = (note or "").strip()
    if reason == RotationReason.COMPROMISE and not note:
        raise ValidationError({"note": "Describe the suspected compromise (what, when noticed)."})
    print_ = fingerprint(new_value) if new_value else ""
    with transaction.atomic():
        secret = SecretSchedule.objects.select_for_update().get(pk=secret.pk)
        previous = secret.last_rotated_at
        rotation = SecretRotation.objects.create(secret=secret, rotated_by=actor, reason=reason, note=note,
                                                 steps_confirmed=list(steps_confirmed), fingerprint=print_)
        secret.last_rotated_at = rotation.rotated_at
        secret.save(update_fields=["last_rotated_at"])
        record_audit(actor=actor, action="record_secret_rotation", obj=secret,
                     before={"last_rotated_at": previous},
                     after={"last_rotated_at": rotation.rotated_at, "reason": reason, "fingerprint": print_,
                            "next_due": secret.next_due}, reason=note or reason)
    return rotation


def update_secret_schedule(*, actor: Any, secret: SecretSchedule, interval_days: int | None,
                           reason: str) -> SecretSchedule:
    require_perm(actor, "ops.change_secretschedule", "change rotation schedules", allow_system=False)
    if interval_days is not None and interval_days < 1:
        raise ValidationError({"interval_days": "Use at least 1 day, or leave it empty for 'as needed'."})
    with transaction.atomic():
        secret = SecretSchedule.objects.select_for_update().get(pk=secret.pk)
        before = {"interval_days": secret.interval_days}
        secret.interval_days = interval_days
        secret.save(update_fields=["interval_days"])
        record_audit(actor=actor, action="update_secret_schedule", obj=secret, before=before,
                     after={"interval_days": interval_days}, reason=reason)
    return secret


# ---------------------------------------------------------------------------- incidents


INCIDENT_LOOKBACK = timedelta(days=365)


def open_incident(*, actor: Any, title: str, severity: str, started_at: datetime | None = None,
                  summary: str = "", runbook: str = "") -> Incident:
    require_perm(actor, "ops.add_incident", "open incidents", allow_system=False)
    title = (title or "").strip()
    if not title:
        raise ValidationError({"title": "Give the incident a short title."})
    if severity not in ("P0", "P1", "P2", "P3"):
        raise ValidationError({"severity": "Severity is P0, P1, P2 or P3."})
    now = timezone.now()
    started_at = started_at or now
    if started_at > now:
        raise ValidationError({"started_at": "The first sign cannot be in the future."})
    if started_at < now - INCIDENT_LOOKBACK:
        # Also keeps out times PostgreSQL cannot hand back (0001-01-01T00:00+14:00 is 1 BC in UTC).
        raise ValidationError({"started_at": "The first sign cannot be more than a year before now: check the date "
                                             "(UTC)."})
    with transaction.atomic():
        incident = Incident.objects.create(title=title[:200], severity=severity, summary=summary, runbook=runbook,
                                           started_at=started_at, detected_at=now, created_by=actor)
        IncidentEvent.objects.create(incident=incident, at=started_at, text="First sign of the issue", author=actor)
        IncidentEvent.objects.create(incident=incident, at=now, text=f"Incident opened ({severity})", author=actor)
        record_audit(actor=actor, action="open_incident", obj=incident, after={"title": title, "severity": severity})
    return incident


def open_system_incident(*, source: str, title: str, severity: str, summary: str = "", runbook: str = "",
                         events: list[tuple[datetime, str]] = (), alerts: list = (), actions: list = ()) -> Incident:
    """An incident the system opens itself (the automatic pause), with its timeline so far and the alerts and
    contract actions it concerns (audited as `source`). Staff take it over from there (commander, status)."""
    now = timezone.now()
    with transaction.atomic():
        incident = Incident.objects.create(title=title[:200], severity=severity, summary=summary, runbook=runbook,
                                           started_at=min([at for at, _ in events] or [now]), detected_at=now,
                                           created_by=None)
        for at, text in sorted(events, key=lambda e: e[0]):
            IncidentEvent.objects.create(incident=incident, at=at, text=text[:2000], author=None)
        IncidentEvent.objects.create(incident=incident, at=now, text=f"Incident opened ({severity}) by {source}",
                                     author=None)
        incident.alerts.add(*alerts)
        incident.contract_actions.add(*actions)
        record_audit(actor=source, action="open_incident", obj=incident, after={"title": title, "severity": severity})
    return incident


def save_incident_details(*, actor: Any, incident: Incident, changed: dict[str, str]) -> Incident:
    """Staff edited an incident's title, runbook, summary or links on its page: saved and audited (`changed`: the
    edited fields, as shown). Status and roles move only through `advance_incident`."""
    require_perm(actor, "ops.change_incident", "update incidents", allow_system=False)
    if not (incident.title or "").strip():
        raise ValidationError({"title": "Give the incident a short title."})
    with transaction.atomic():
        incident.save()
        record_audit(actor=actor, action="change_incident", obj=incident, after=changed)
    return incident


def add_incident_event(*, actor: Any, incident: Incident, text: str, at: datetime | None = None) -> IncidentEvent:
    require_perm(actor, "ops.change_incident", "update incidents", allow_system=False)
    text = (text or "").strip()
    if not text:
        raise ValidationError({"text": "The timeline entry is empty."})
    with transaction.atomic():
        event = IncidentEvent.objects.create(incident=incident, at=at or timezone.now(), text=text, author=actor)
        record_audit(actor=actor, action="add_incident_event", obj=incident, after={"at": event.at, "text": text})
    return event


def advance_incident(*, actor: Any, incident: Incident, to: str, note: str = "", commander=None, ops_lead=None,
                     comms_lead=None, severity: str | None = None) -> Incident:
    """Move along detected → triaged → mitigated → resolved. Triage assigns the commander and severity."""
    require_perm(actor, "ops.change_incident", "update incidents", allow_system=False)
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident.pk)
        flow = [s.value for s in INCIDENT_FLOW]
        if to not in flow[1:4] or flow.index(to) != flow.index(incident.status) + 1:
            following = flow[flow.index(incident.status) + 1] if incident.status != flow[-1] else "nothing"
            raise ValidationError({"status": f"An incident that is {incident.get_status_display().lower()} can go to "
                                             f"{following} next."})
        before = {"status": incident.status, "severity": incident.severity}
        now = timezone.now()
        if to == IncidentStatus.TRIAGED:
            if commander is None:
                raise ValidationError({"commander": "Triage assigns an incident commander."})
            incident.commander, incident.ops_lead, incident.comms_lead = commander, ops_lead, comms_lead
            incident.severity = severity or incident.severity
            incident.triaged_at = now
        elif to == IncidentStatus.MITIGATED:
            incident.mitigated_at = now
        elif to == IncidentStatus.RESOLVED:
            incident.resolved_at = now
            if incident.severity in POSTMORTEM_SEVERITIES:
                incident.postmortem_due_at = now + POSTMORTEM_WINDOW
        incident.status = to
        incident.save()
        IncidentEvent.objects.create(incident=incident, at=now, author=actor,
                                     text=f"{IncidentStatus(to).label}{': ' + note if note else ''}")
        if to == IncidentStatus.RESOLVED:
            # Drafted after the "Resolved" entry is written, so the draft's timeline ends with it.
            incident.postmortem = draft_postmortem(incident)
            incident.save(update_fields=["postmortem"])
        record_audit(actor=actor, action="advance_incident", obj=incident, before=before,
                     after={"status": to, "severity": incident.severity}, reason=note)
    return incident


def complete_postmortem(*, actor: Any, incident: Incident, text: str) -> Incident:
    require_perm(actor, "ops.change_incident", "update incidents", allow_system=False)
    text = (text or "").strip()
    if incident.status != IncidentStatus.RESOLVED:
        raise ValidationError({"status": "Only a resolved incident gets its post-mortem."})
    if not text or "[" in text.split("## Root Cause")[-1][:40]:
        raise ValidationError({"postmortem": "Fill in the post-mortem (root cause, resolution, lessons, actions)."})
    with transaction.atomic():
        incident = Incident.objects.select_for_update().get(pk=incident.pk)
        incident.postmortem, incident.postmortem_done_at, incident.status = (
            text, timezone.now(), IncidentStatus.POSTMORTEM)
        incident.save(update_fields=["postmortem", "postmortem_done_at", "status"])
        IncidentEvent.objects.create(incident=incident, at=incident.postmortem_done_at, author=actor,
                                     text="Post-mortem completed")
        record_audit(actor=actor, action="complete_postmortem", obj=incident, after={"status": incident.status})
    return incident


def draft_postmortem(incident: Incident) -> str:
    """The guide's post-mortem template (§7), with the timeline and the known facts filled in."""
    end = incident.resolved_at or timezone.now()
    minutes = int((end - incident.detected_at).total_seconds() // 60)
    rows = "\n".join(f"| {e.at:%Y-%m-%d %H:%M} | {e.text} |" for e in incident.timeline.order_by("at", "id"))
    orders = ", ".join(str(o) for o in incident.affected_orders.all()[:50]) or "[number]"
    actions = ", ".join(f"#{a.pk} {a.description}" for a in incident.contract_actions.all()[:20]) or "none"
    return f"""# Incident Post-Mortem: {incident.title}

**Date**: {incident.detected_at:%Y-%m-%d}
**Duration**: {minutes // 60:02d}:{minutes % 60:02d} (from detection to resolution)
**Severity**: {incident.severity}
**Commander**: {incident.commander or '[Name]'}

## Summary
{incident.summary or 'One-paragraph description of what happened and impact.'}

## Impact
- Users affected: [number / percentage]
- Orders affected: {orders}
- Funds at risk: [amount / none]
- Revenue impact: [amount]

## Timeline (UTC)
| Time | Event |
|------|-------|
{rows}

## Root Cause
[Technical explanation of what caused the incident.]

## Resolution
[What was done to fix the issue.] Contract actions: {actions}

## Lessons Learned
### What went well
- ...

### What went poorly
- ...

## Action Items
| Action | Owner | Deadline |
|--------|-------|----------|
| [Improvement] | [Name] | YYYY-MM-DD |
"""


def monthly_incident_report(year: int, month: int) -> dict:
    """Incidents of a month by severity, with MTTD (first sign → detection) and MTTR (detection → resolution)."""
    start = datetime(year, month, 1, tzinfo=dt_timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=dt_timezone.utc)
    report = {}
    for severity in ("P0", "P1", "P2", "P3"):
        rows = list(Incident.objects.filter(severity=severity, detected_at__gte=start, detected_at__lt=end))
        resolved = [i for i in rows if i.resolved_at]
        report[severity] = {
            "count": len(rows),
            "resolved": len(resolved),
            "mttd_minutes": round(sum((i.detected_at - i.started_at).total_seconds() for i in rows) / 60 / len(rows), 1)
            if rows else None,
            "mttr_minutes": round(sum((i.resolved_at - i.detected_at).total_seconds() for i in resolved) / 60
                                  / len(resolved), 1) if resolved else None,
        }
    return report


def flag_value_problem(flag: PlatformFlag, value: Any) -> str:
    """What is wrong with `value` for `flag`, or "": a switch stays a switch (1 or "true" would read as on to
    some code and not to other). The flag form shows it on its field; `set_platform_flag` enforces it."""
    if isinstance(flag.value, bool) and not isinstance(value, bool):
        return f"{flag.key} is a switch: true or false (JSON), not {value!r}."
    return ""


def set_platform_flag(*, actor: Any, key: str, value: Any, reason: str) -> PlatformFlag:
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to change a platform setting."})
    with transaction.atomic():
        flag = PlatformFlag.objects.select_for_update().filter(key=key).first()
        if flag is None:
            raise ValidationError({"key": f"Unknown platform setting {key!r}."})
        problem = flag_value_problem(flag, value)
        if problem:
            raise ValidationError({"value": problem})
        before = {"value": flag.value}
        flag.value, flag.updated_by = value, actor if getattr(actor, "pk", None) else None
        flag.save(update_fields=["value", "updated_by", "updated_at"])
        record_audit(actor=actor, action="set_platform_flag", obj=flag, before=before, after={"value": value},
                     reason=reason)
    return flag


def terminate_idle_connections(*, actor: Any, reason: str, pids: list[int], idle_seconds: int = 600) -> list[int]:
    """RB-02 step 3: end the connections `pids` (those the page showed) that are still idle for longer than
    `idle_seconds` (10 minutes) on this database, never the caller's own nor one running a query; audited with
    the pids ended. Needs a reason."""
    require_perm(actor, "ops.terminate_idle_connections", "end idle database connections")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why the connections must go (RB-02)."})
    with transaction.atomic():
        with connection.cursor() as cur:
            # Chosen first, ended after: in one WHERE, PostgreSQL may call pg_terminate_backend before the filters.
            cur.execute(f"WITH idle AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE {IDLE_LONG} "
                        "AND pid = ANY(%s)) SELECT pid FROM idle WHERE pg_terminate_backend(pid)",
                        [idle_seconds, list(pids)])
            ended = sorted(pid for (pid,) in cur.fetchall())
        record_audit(actor=actor, action="terminate_idle_connections", object_type="database",
                     after={"ended": ended, "idle_seconds": idle_seconds}, reason=reason)
    return ended
