"""The alert lifecycle: a check raises (`raise_alert`) and, when its condition clears, resolves (`settle_alerts`);
staff acknowledge with a verdict (true alarm, false alarm, test). Each change of state is audited."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backoffice.audit.services import record_audit

from .delivery import QUIET_PERIOD, enqueue_deliveries
from .models import SEVERITY_RANK, Alert, Verdict

logger = logging.getLogger(__name__)

# An alert whose key fired this many times within FLAP_WINDOW is flapping: its fires and resolutions stop going to
# the channels until it settles (firing without a break for FLAP_SETTLE, or no new fire for a FLAP_WINDOW).
FLAP_WINDOW = timedelta(hours=1)
FLAP_SETTLE = timedelta(minutes=10)


def _flap_limit() -> int:
    return int(getattr(settings, "ALERT_FLAP_LIMIT", 4))


def raise_alert(*, key: str, severity: str, title: str, message: str = "", source: str,
                inhibited: str = "") -> Alert:
    """Open a firing alert, or count a repeat of the firing one with the same key (no duplicate rows).

    A new alert goes to the channels, unless it is flapping (this key fired ALERT_FLAP_LIMIT times within the
    hour) or `inhibited` names a cause that already pages (the chain is paused). A repeat goes again once the quiet
    period since the last send is over, unless someone acknowledged it; an inhibited alert whose cause went away,
    or a flapping one that has now fired without a break for FLAP_SETTLE, goes at once.
    """
    now = timezone.now()
    inhibited = inhibited[:200]
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(key=key, resolved_at__isnull=True).first()
        if alert is None:
            recent = Alert.objects.filter(key=key, created_at__gte=now - FLAP_WINDOW).count()
            flapping = recent + 1 >= _flap_limit()
            send = not flapping and not inhibited
            alert = Alert.objects.create(key=key, severity=severity, title=title[:200], message=message,
                                         source=source, last_sent_at=now if send else None, flapping=flapping,
                                         inhibited=inhibited)
            logger.warning("alert raised: %s", title, extra={"alert_key": key, "severity": severity})
        else:
            settled = alert.flapping and now - alert.created_at >= FLAP_SETTLE
            flapping = alert.flapping and not settled
            never_sent = alert.last_sent_at is None
            worse = SEVERITY_RANK[severity] < SEVERITY_RANK[alert.severity]  # an observation confirmed: escalated
            send = (not inhibited and not flapping and (alert.acknowledged_at is None or worse)
                    and (never_sent or worse or now - alert.last_sent_at >= QUIET_PERIOD))
            Alert.objects.filter(pk=alert.pk).update(occurrences=F("occurrences") + 1, last_seen_at=now,
                                                     message=message, title=title[:200], severity=severity,
                                                     clean_runs=0, flapping=flapping, inhibited=inhibited,
                                                     last_sent_at=now if send else alert.last_sent_at)
            alert.refresh_from_db()
        if send:
            enqueue_deliveries(alert)
    return alert


def _in_scope(key: str, scope: Iterable[str]) -> bool:
    return any(key == s or key.startswith(s + ":") for s in scope)


def settle_alerts(*, source: str, scope: Iterable[str], raised: Iterable[str],
                  clean_runs: int | None = None) -> list[Alert]:
    """After a run of check `source`: each of its firing alerts whose condition the run evaluated (`scope`: keys,
    or key prefixes covering `prefix:…`) and found clear (not in `raised`) counts one clean run; after
    `clean_runs` of them in a row (ALERT_CLEAN_RUNS, 1: the next run) it is resolved. Alerts of what the run could
    not evaluate (a chain whose RPC failed) are outside `scope` and stay as they are. Returns those resolved."""
    scope, raised = list(scope), set(raised)
    needed = clean_runs or int(getattr(settings, "ALERT_CLEAN_RUNS", 1))
    resolved = []
    for alert in Alert.objects.firing().filter(source=source).exclude(key__in=raised).order_by("pk"):
        if not _in_scope(alert.key, scope):
            continue
        runs = alert.clean_runs + 1
        if runs >= needed:
            resolved.append(resolve_alert(alert=alert, resolution=f"cleared: {source} found it clear"
                                          + (f" {runs} runs in a row" if runs > 1 else "")))
        else:
            Alert.objects.filter(pk=alert.pk, resolved_at__isnull=True).update(clean_runs=runs)
    return resolved


def resolve_alert(*, alert: Alert, resolution: str, actor: Any = None) -> Alert:
    """Resolve a firing alert (audited; by the system unless `actor` is given). The channels that had its fire get
    the resolution on the same thread (PagerDuty: a resolve event on the incident's dedup key); one whose fire was
    never sent (flapping, or inhibited) resolves quietly. It stays on the pages until someone acknowledges it."""
    now = timezone.now()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.resolved_at is not None:
            return alert
        fired_recently = Alert.objects.filter(key=alert.key, created_at__gte=now - FLAP_WINDOW).count()
        alert.flapping = alert.flapping or fired_recently >= _flap_limit()
        alert.resolved_at, alert.resolution = now, resolution[:300]
        alert.save(update_fields=["resolved_at", "resolution", "flapping"])
        record_audit(actor=actor or f"system:{alert.source}", action="resolve_alert", obj=alert,
                     before={"state": "firing"}, after={"state": "resolved", "key": alert.key,
                                                        "flapping": alert.flapping}, reason=resolution)
        # A fire that went out gets its resolution, flapping or not: one that settled was sent, and PagerDuty would
        # keep its incident open for ever. A flapping alert's fires are not sent, so neither are their ends.
        if alert.last_sent_at is not None:
            enqueue_deliveries(alert, resolved=True)
    logger.info("alert resolved: %s", alert.title, extra={"alert_key": alert.key, "severity": alert.severity})
    return alert


def acknowledge_alert(*, actor: Any, alert: Alert, verdict: str) -> Alert:
    """A person has it: acknowledged with a verdict (true alarm, false alarm, test), audited. Acknowledging does
    not resolve: a firing alert stays firing (quiet) until its check sees the condition clear."""
    if verdict not in Verdict.values:
        raise ValidationError({"verdict": f"Say what the alert was: one of {', '.join(Verdict.labels)} "
                                          f"({', '.join(Verdict.values)}), not {verdict!r}."})
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.acknowledged_at is None:
            alert.acknowledged_at, alert.acknowledged_by, alert.verdict = timezone.now(), actor, verdict
            alert.save(update_fields=["acknowledged_at", "acknowledged_by", "verdict"])
            record_audit(actor=actor, action="acknowledge_alert", obj=alert,
                         after={"key": alert.key, "verdict": verdict, "state": alert.state})
    return alert


def acknowledge_chain_alerts(*, actor: Any, chains: list[str], reason: str) -> int:
    """Close every alert about these chains (the checks' keys read `<check>:<chain>[:…]`): resolved and acknowledged,
    each audited with the reason (a discarded local chain's alerts describe nothing that exists any more). For a
    system actor (a string) the alert records no staff user."""
    user = actor if getattr(actor, "pk", None) is not None else None
    done = 0
    with transaction.atomic():
        for alert in Alert.objects.select_for_update().filter(acknowledged_at__isnull=True).order_by("pk"):
            parts = alert.key.split(":")
            if len(parts) < 2 or parts[1] not in chains:
                continue
            now = timezone.now()
            alert.acknowledged_at, alert.acknowledged_by = now, user
            if alert.resolved_at is None:
                alert.resolved_at, alert.resolution = now, f"closed: {reason}"[:300]
            alert.save(update_fields=["acknowledged_at", "acknowledged_by", "resolved_at", "resolution"])
            record_audit(actor=actor, action="acknowledge_alert", obj=alert, after={"key": alert.key}, reason=reason)
            done += 1
    return done
