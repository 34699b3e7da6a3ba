"""Alert delivery to Telegram, webhooks and PagerDuty: retries with backoff, quiet repeats, a breaker per channel.

`raise_alert` (backoffice.alerts.services) decides *whether* an occurrence is worth sending (a new alert, or a
repeat after the quiet period); this module sends it, one AlertDelivery per channel.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
from datetime import timedelta

import requests
from django.db import transaction
from django.utils import timezone

from backoffice.tasking import send_task

from .models import Alert, AlertChannel, AlertDelivery, ChannelKind, DeliveryEvent, DeliveryStatus

logger = logging.getLogger(__name__)

QUIET_PERIOD = timedelta(minutes=30)  # a repeat of an open alert is re-sent at most this often
MAX_ATTEMPTS = 6
BREAKER_FAILURES = 5
BREAKER_OPEN = timedelta(minutes=5)
TIMEOUT = 5.0
TELEGRAM_API = "https://api.telegram.org"
PAGERDUTY_EVENTS = "https://events.pagerduty.com/v2/enqueue"
# PagerDuty's severities for ours: its escalation policies page on critical and error.
PAGERDUTY_SEVERITY = {"P0": "critical", "P1": "error", "P2": "warning", "P3": "info"}


class DeliveryError(Exception):
    pass


SWEEP_MAX_AGE = timedelta(hours=6)  # a pending delivery older than this is no longer retried by the sweep
FIRE_FIRST_SECONDS = 5  # a resolution waits this long, again and again, while its fire is still pending


def backoff_seconds(attempt: int) -> int:
    """5 s, 10 s, 20 s, 40 s, 80 s, … capped at 10 minutes."""
    return min(5 * 2 ** max(attempt - 1, 0), 600)


def plan_deliveries(alert: Alert, *, resolved: bool = False) -> list[AlertDelivery]:
    """One pending delivery per enabled channel that wants this severity; a resolution only to the channels that
    were sent (or are sending) its fire, so no one is told of the end of something they never heard of."""
    channels = [c for c in AlertChannel.objects.filter(enabled=True) if c.wants(alert.severity)]
    if resolved:
        had_fire = set(alert.deliveries.filter(event=DeliveryEvent.FIRE).exclude(status=DeliveryStatus.FAILED)
                       .values_list("channel_id", flat=True))
        channels = [c for c in channels if c.pk in had_fire]
    event = DeliveryEvent.RESOLVE if resolved else DeliveryEvent.FIRE
    return [AlertDelivery.objects.create(alert=alert, channel=c, event=event) for c in channels]


def format_text(alert: Alert, *, resolved: bool = False) -> str:
    if resolved:
        return (f"[RESOLVED] [{alert.severity}] {alert.title}\n{alert.resolution}\n"
                f"source: {alert.source} · fired {alert.created_at:%Y-%m-%d %H:%M} UTC, resolved "
                f"{alert.resolved_at:%Y-%m-%d %H:%M} UTC")[:4000]
    repeat = f" (×{alert.occurrences})" if alert.occurrences > 1 else ""
    return (f"[{alert.severity}] {alert.title}{repeat}\n{alert.message}\n"
            f"source: {alert.source} · first {alert.created_at:%Y-%m-%d %H:%M} UTC")[:4000]


def _send(channel: AlertChannel, alert: Alert, *, resolved: bool = False) -> None:
    secret = os.environ.get(channel.secret_env, "") if channel.secret_env else ""
    if channel.kind == ChannelKind.TELEGRAM:
        if not secret:
            raise DeliveryError(f"the bot token variable {channel.secret_env or '(none)'} is not set")
        url = f"{(channel.url or TELEGRAM_API).rstrip('/')}/bot{secret}/sendMessage"
        body = json.dumps({"chat_id": channel.chat_id, "text": format_text(alert, resolved=resolved),
                           "disable_web_page_preview": True})
        headers = {"Content-Type": "application/json"}
    elif channel.kind == ChannelKind.PAGERDUTY:
        if not secret:
            raise DeliveryError(f"the routing key variable {channel.secret_env or '(none)'} is not set")
        url = channel.url or PAGERDUTY_EVENTS
        # One incident per alert (the condition coming back after it resolved is a new alert, so a new incident);
        # PagerDuty folds repeats with the same dedup_key into it, and a resolve event on that key closes it.
        dedup = f"{alert.key}#{alert.pk}"
        if resolved:
            body = json.dumps({"routing_key": secret, "event_action": "resolve", "dedup_key": dedup})
        else:
            body = json.dumps({"routing_key": secret, "event_action": "trigger", "dedup_key": dedup,
                               "payload": {"summary": f"[{alert.severity}] {alert.title}"[:1024],
                                           "severity": PAGERDUTY_SEVERITY[alert.severity],
                                           "source": "escrow-back-office", "component": alert.source,
                                           "timestamp": alert.created_at.isoformat(),
                                           "custom_details": {"message": alert.message,
                                                              "occurrences": alert.occurrences, "key": alert.key}}})
        headers = {"Content-Type": "application/json"}
    else:
        url = channel.url
        payload = {"key": alert.key, "severity": alert.severity, "title": alert.title, "message": alert.message,
                   "source": alert.source, "occurrences": alert.occurrences, "status": alert.state,
                   "first_seen": alert.created_at.isoformat(), "last_seen": alert.last_seen_at.isoformat()}
        if resolved:
            payload.update(resolved_at=alert.resolved_at.isoformat(), resolution=alert.resolution)
        body = json.dumps(payload, sort_keys=True)
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Backoffice-Signature"] = "sha256=" + hmac.new(secret.encode(), body.encode(),
                                                                     hashlib.sha256).hexdigest()
    try:
        response = requests.post(url, data=body, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:
        # The exception text can carry the URL, and a Telegram URL carries the token.
        raise DeliveryError(type(exc).__name__) from None
    if response.status_code >= 300:
        raise DeliveryError(f"HTTP {response.status_code}")


def attempt_delivery(delivery_id: int) -> tuple[str, int | None]:
    """Try one delivery once. Returns (status, retry_in_seconds or None)."""
    with transaction.atomic():
        delivery = AlertDelivery.objects.select_for_update().select_related("alert", "channel").get(pk=delivery_id)
        if delivery.status != DeliveryStatus.PENDING:
            return delivery.status, None
        if delivery.event == DeliveryEvent.RESOLVE and AlertDelivery.objects.filter(
                alert_id=delivery.alert_id, channel_id=delivery.channel_id, event=DeliveryEvent.FIRE,
                status=DeliveryStatus.PENDING, created_at__gte=timezone.now() - SWEEP_MAX_AGE).exists():
            # Each delivery is its own task: a resolution that overtook its fire (still retrying, or being sent
            # now) would reach PagerDuty first, and the incident the fire then opens would never be resolved. A
            # fire older than the sweep's reach will never be sent: then the resolution is not held for it.
            return delivery.status, FIRE_FIRST_SECONDS
        channel = AlertChannel.objects.select_for_update().get(pk=delivery.channel_id)
        now = timezone.now()
        if channel.open_until and channel.open_until > now:
            return delivery.status, int((channel.open_until - now).total_seconds()) + 1
        delivery.attempts += 1
        try:
            _send(channel, delivery.alert, resolved=delivery.event == DeliveryEvent.RESOLVE)
        except DeliveryError as exc:
            delivery.last_error = channel.last_error = str(exc)[:500]
            channel.consecutive_failures += 1
            if channel.consecutive_failures >= BREAKER_FAILURES:
                channel.open_until = now + BREAKER_OPEN
                logger.error("alert channel %s opened after %d failures", channel.name, channel.consecutive_failures)
            retry = backoff_seconds(delivery.attempts) if delivery.attempts < MAX_ATTEMPTS else None
            if retry is None:
                delivery.status = DeliveryStatus.FAILED
            channel.save(update_fields=["consecutive_failures", "open_until", "last_error"])
            delivery.save(update_fields=["attempts", "status", "last_error"])
            return delivery.status, retry
        channel.consecutive_failures, channel.open_until, channel.last_error = 0, None, ""
        channel.save(update_fields=["consecutive_failures", "open_until", "last_error"])
        delivery.status, delivery.sent_at = DeliveryStatus.SENT, now
        delivery.save(update_fields=["attempts", "status", "sent_at"])
        return delivery.status, None


def enqueue_deliveries(alert: Alert, *, resolved: bool = False) -> None:
    """After commit: plan deliveries (of its fire, or its resolution) and hand them to the worker (never inside
    the caller's transaction)."""

    def _go():
        for delivery in plan_deliveries(alert, resolved=resolved):
            try:
                # By name: the task module imports this one, so importing it back would close a circle.
                send_task("backoffice.alerts.tasks.deliver_alert", delivery_id=delivery.pk)
            except Exception as exc:  # broker down: the sweep task picks pending deliveries up
                logger.warning("could not enqueue alert delivery %s: %s", delivery.pk, exc)

    transaction.on_commit(_go)


def sweep_pending(max_age: timedelta = SWEEP_MAX_AGE) -> int:
    """Scheduled: retry pending deliveries whose task was lost (broker outage)."""
    done = 0
    cutoff = timezone.now() - max_age
    for delivery_id in AlertDelivery.objects.filter(status=DeliveryStatus.PENDING, created_at__gte=cutoff) \
            .values_list("pk", flat=True):
        attempt_delivery(delivery_id)
        done += 1
    return done
