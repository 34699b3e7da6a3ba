"""Operations writes: raising and acknowledging alerts; forgetting a discarded local chain's contract actions."""
from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .audit import record_audit
from .models import Alert

logger = logging.getLogger(__name__)


def raise_alert(*, key: str, severity: str, title: str, message: str = "", source: str) -> Alert:
    """Open an alert, or count a repeat of the open one with the same key (no duplicate rows).

    A new alert goes to the channels; a repeat only once the quiet period since the last send is over.
    """
    from .alerting import QUIET_PERIOD, enqueue_deliveries

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


# The records of contract actions sent to a chain, with the nonces they used (incident links cascade).
LOCAL_CHAIN_ACTION_TABLES = ("ops_action_signatures", "ops_contract_actions", "ops_signer_nonces")


def forget_local_contract_actions(*, actor: Any) -> int:
    """Development only: drop the contract actions of a local chain that `make run` just replaced (audited).

    A fresh anvil starts every account at nonce 0, so the old actions' signer nonces and Safe nonces
    would make the first new transaction wait forever behind a gap, and their history describes
    transactions that no longer exist. TRUNCATE, because the table refuses row DELETEs by trigger;
    the audit log keeps what happened to them. Refused in production.
    """
    if settings.PRODUCTION:
        raise ImproperlyConfigured("Contract actions are a permanent record: never forgotten in production.")
    with transaction.atomic():
        with connection.cursor() as cur:
            # Deferred foreign-key checks still pending in this transaction would make PostgreSQL refuse TRUNCATE.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute("SELECT count(*) FROM ops_contract_actions")
            (count,) = cur.fetchone()
            cur.execute(f"TRUNCATE {', '.join(LOCAL_CHAIN_ACTION_TABLES)} CASCADE")
        record_audit(actor=actor, action="forget_local_contract_actions", object_type="ops.contractaction",
                     after={"forgotten": count}, reason="a fresh local chain replaced the one they were sent to")
    return count
