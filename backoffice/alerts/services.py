"""Raising and acknowledging alerts: any app's check calls `raise_alert`; staff acknowledge (audited)."""
from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from backoffice.audit.services import record_audit

from .delivery import QUIET_PERIOD, enqueue_deliveries
from .models import Alert

logger = logging.getLogger(__name__)


def raise_alert(*, key: str, severity: str, title: str, message: str = "", source: str) -> Alert:
    """Open an alert, or count a repeat of the open one with the same key (no duplicate rows).

    A new alert goes to the channels; a repeat only once the quiet period since the last send is over.
    """
    now = timezone.now()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(key=key, acknowledged_at__isnull=True).first()
        if alert is None:
            alert = Alert.objects.create(key=key, severity=severity, title=title[:200], message=message,
                                         source=source, last_sent_at=now)
            logger.warning("alert raised: %s", title, extra={"alert_key": key, "severity": severity})
            send = True
        else:
            send = alert.last_sent_at is None or now - alert.last_sent_at >= QUIET_PERIOD
            Alert.objects.filter(pk=alert.pk).update(occurrences=F("occurrences") + 1, last_seen_at=now,
                                                     message=message, title=title[:200],
                                                     last_sent_at=now if send else alert.last_sent_at)
            alert.refresh_from_db()
        if send:
            enqueue_deliveries(alert)
    return alert


def acknowledge_alert(*, actor: Any, alert: Alert) -> Alert:
    with transaction.atomic():
        alert = Alert.objects.select_for_update().get(pk=alert.pk)
        if alert.acknowledged_at is None:
            alert.acknowledged_at, alert.acknowledged_by = timezone.now(), actor
            alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
            record_audit(actor=actor, action="acknowledge_alert", obj=alert, after={"key": alert.key})
    return alert


def acknowledge_chain_alerts(*, actor: Any, chains: list[str], reason: str) -> int:
    """Acknowledge every open alert about these chains (the checks' keys read `<check>:<chain>[:…]`), each
    audited with the reason. For a system actor (a string) the alert records no staff user."""
    user = actor if getattr(actor, "pk", None) is not None else None
    done = 0
    with transaction.atomic():
        for alert in Alert.objects.select_for_update().filter(acknowledged_at__isnull=True).order_by("pk"):
            parts = alert.key.split(":")
            if len(parts) < 2 or parts[1] not in chains:
                continue
            alert.acknowledged_at, alert.acknowledged_by = timezone.now(), user
            alert.save(update_fields=["acknowledged_at", "acknowledged_by"])
            record_audit(actor=actor, action="acknowledge_alert", obj=alert, after={"key": alert.key}, reason=reason)
            done += 1
    return done
