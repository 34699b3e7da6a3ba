"""Alert delivery against a real local HTTP receiver (Telegram's API and a webhook): payloads, signatures,
backoff, the channel breaker, quiet repeats, acknowledgement, and the bot token kept out of errors and logs."""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.alerts import delivery as alerting
from backoffice.alerts.models import Alert, AlertChannel, AlertDelivery
from backoffice.alerts.services import acknowledge_alert, raise_alert, settle_alerts
from backoffice.audit.models import AuditLog
from backoffice.devservices import free_port
from tests.local_http import LocalHttpServer

BOT_TOKEN = "7000000001:AAH-bot-token-never-shown"
WEBHOOK_SECRET = "webhook-shared-secret-42"


class Receiver(LocalHttpServer):
    """A local HTTP server that records every POST and answers with the next queued status (default 200)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.statuses: list[int] = []
        super().__init__(self._answer)

    def _answer(self, path: str, headers, body: bytes) -> tuple[int, bytes]:
        self.requests.append({"path": path, "headers": dict(headers), "body": body})
        status = self.statuses.pop(0) if self.statuses else 200
        return status, json.dumps({"ok": status < 300}).encode()


def telegram(receiver, **fields) -> AlertChannel:
    return AlertChannel.objects.create(name=fields.pop("name", "ops-telegram"), kind="telegram", url=receiver.url,
                                       chat_id="-1001234567", secret_env="TEST_TELEGRAM_BOT_TOKEN", **fields)


def webhook(receiver, **fields) -> AlertChannel:
    fields.setdefault("secret_env", "TEST_WEBHOOK_SECRET")
    return AlertChannel.objects.create(name=fields.pop("name", "ops-webhook"), kind="webhook",
                                       url=f"{receiver.url}/hooks/alerts", **fields)


_keys = itertools.count(1)


def new_alert(**fields) -> Alert:
    defaults = {"key": f"sync-lag:bsc:{next(_keys)}", "severity": "P2", "title": "bsc sync lag 150 blocks",
                "message": "RB-03", "source": "check_sync"}
    return Alert.objects.create(**{**defaults, **fields})


def delivery(channel: AlertChannel, alert: Alert | None = None) -> AlertDelivery:
    return AlertDelivery.objects.create(alert=alert or new_alert(), channel=channel)


def test_alerting_telegram_posts_chat_id_and_text_to_the_bot_url(db, receiver):
    channel = telegram(receiver)
    alert = new_alert()
    [planned] = alerting.plan_deliveries(alert)
    assert alerting.attempt_delivery(planned.pk) == ("sent", None)
    [request] = receiver.requests
    assert request["path"] == f"/bot{BOT_TOKEN}/sendMessage"
    body = json.loads(request["body"])
    assert body["chat_id"] == "-1001234567"
    assert body["text"].startswith("[P2] bsc sync lag 150 blocks\nRB-03\nsource: check_sync")
    planned.refresh_from_db()
    assert planned.status == "sent" and planned.attempts == 1 and planned.sent_at is not None
    assert planned.channel == channel


def test_alerting_webhook_posts_the_alert_with_a_valid_hmac_signature(db, receiver):
    webhook(receiver)
    alert = new_alert(key="contract-paused:bsc", severity="P0", title="bsc escrow is PAUSED")
    [planned] = alerting.plan_deliveries(alert)
    assert alerting.attempt_delivery(planned.pk) == ("sent", None)
    [request] = receiver.requests
    assert request["path"] == "/hooks/alerts"
    body = json.loads(request["body"])
    assert body["key"] == "contract-paused:bsc" and body["severity"] == "P0"
    assert body["title"] == "bsc escrow is PAUSED" and body["occurrences"] == 1
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Backoffice-Signature"], expected)


def test_alerting_pagerduty_triggers_an_event_with_routing_key_severity_and_dedup_key(db, receiver, monkeypatch):
    monkeypatch.setenv("TEST_PAGERDUTY_ROUTING_KEY", "R0UT1NGKEY0123456789abcdef012345")
    AlertChannel.objects.create(name="on-call", kind="pagerduty", url=f"{receiver.url}/v2/enqueue",
                                secret_env="TEST_PAGERDUTY_ROUTING_KEY", min_severity="P1")
    alert = new_alert(key="contract-paused:bsc", severity="P0", title="bsc escrow is PAUSED", source="check_contracts")
    [planned] = alerting.plan_deliveries(alert)
    assert alerting.attempt_delivery(planned.pk) == ("sent", None)
    [request] = receiver.requests
    body = json.loads(request["body"])
    assert request["path"] == "/v2/enqueue" and body["routing_key"] == "R0UT1NGKEY0123456789abcdef012345"
    assert body["event_action"] == "trigger" and body["dedup_key"] == f"contract-paused:bsc#{alert.pk}"
    assert body["payload"]["severity"] == "critical" and body["payload"]["summary"] == "[P0] bsc escrow is PAUSED"
    assert body["payload"]["component"] == "check_contracts" and body["payload"]["custom_details"]["message"] == "RB-03"
    assert alerting.plan_deliveries(new_alert(severity="P2")) == [], "the pager wants P1 and worse only"


def test_alerting_pagerduty_without_its_routing_key_fails_naming_the_variable(db, receiver):
    AlertChannel.objects.create(name="on-call", kind="pagerduty", url=receiver.url, secret_env="UNSET_ROUTING_KEY")
    [planned] = alerting.plan_deliveries(new_alert(severity="P0"))
    status, retry = alerting.attempt_delivery(planned.pk)
    planned.refresh_from_db()
    assert status == "pending" and retry and "UNSET_ROUTING_KEY is not set" in planned.last_error
    assert receiver.requests == []


def test_alerting_pagerduty_channel_needs_its_routing_key_variable_in_the_database(db):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError, match="alert_channels_configured"), transaction.atomic():
        AlertChannel.objects.create(name="on-call", kind="pagerduty")


def test_alerting_webhook_without_a_secret_sends_no_signature(db, receiver):
    webhook(receiver, secret_env="")
    [planned] = alerting.plan_deliveries(new_alert())
    alerting.attempt_delivery(planned.pk)
    assert "X-Backoffice-Signature" not in receiver.requests[0]["headers"]


def test_alerting_plans_only_enabled_channels_that_want_the_severity(db, receiver):
    telegram(receiver, name="pager", min_severity="P1")
    webhook(receiver, name="everything", min_severity="P3")
    webhook(receiver, name="off", enabled=False)
    assert [d.channel.name for d in alerting.plan_deliveries(new_alert(severity="P2"))] == ["everything"]
    assert sorted(d.channel.name for d in alerting.plan_deliveries(new_alert(key="k2", severity="P0"))) == \
        ["everything", "pager"]


def test_alerting_failures_retry_with_backoff_then_fail(db, receiver):
    channel = webhook(receiver)
    d = delivery(channel)
    receiver.statuses = [500] * alerting.MAX_ATTEMPTS
    retries = []
    for _ in range(alerting.MAX_ATTEMPTS):
        AlertChannel.objects.filter(pk=channel.pk).update(open_until=None)  # time passes beyond the breaker
        retries.append(alerting.attempt_delivery(d.pk))
    assert retries == [("pending", 5), ("pending", 10), ("pending", 20), ("pending", 40), ("pending", 80),
                       ("failed", None)]
    assert len(receiver.requests) == alerting.MAX_ATTEMPTS
    d.refresh_from_db()
    assert d.status == "failed" and d.attempts == alerting.MAX_ATTEMPTS and d.last_error == "HTTP 500"
    assert alerting.attempt_delivery(d.pk) == ("failed", None)  # a finished delivery is not tried again
    assert len(receiver.requests) == alerting.MAX_ATTEMPTS


def test_alerting_backoff_is_capped_at_ten_minutes(db):
    assert [alerting.backoff_seconds(n) for n in (1, 2, 3, 4, 8, 20)] == [5, 10, 20, 40, 600, 600]


def test_alerting_five_failures_open_the_breaker_and_a_success_closes_it(db, receiver):
    channel = webhook(receiver)
    receiver.statuses = [503] * alerting.BREAKER_FAILURES
    first = [delivery(channel) for _ in range(alerting.BREAKER_FAILURES)]
    for d in first:
        status, retry = alerting.attempt_delivery(d.pk)
        assert status == "pending" and retry == 5
    channel.refresh_from_db()
    assert channel.consecutive_failures == alerting.BREAKER_FAILURES
    assert channel.open_until > timezone.now() + timedelta(minutes=4)

    blocked = delivery(channel)
    status, retry = alerting.attempt_delivery(blocked.pk)
    assert status == "pending" and 0 < retry <= alerting.BREAKER_OPEN.total_seconds() + 1
    assert len(receiver.requests) == alerting.BREAKER_FAILURES  # no HTTP call while open
    blocked.refresh_from_db()
    assert blocked.attempts == 0

    AlertChannel.objects.filter(pk=channel.pk).update(open_until=timezone.now() - timedelta(seconds=1))
    assert alerting.attempt_delivery(blocked.pk) == ("sent", None)
    channel.refresh_from_db()
    assert channel.consecutive_failures == 0 and channel.open_until is None and channel.last_error == ""


def test_alerting_repeats_within_the_quiet_period_create_no_deliveries(db, receiver, enqueued,
                                                                        django_capture_on_commit_callbacks):
    webhook(receiver)
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_alert(key="sync-stuck:bsc", severity="P1", title="bsc sync stuck", source="check_sync")
    assert len(enqueued) == 1
    for _ in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            repeat = raise_alert(key="sync-stuck:bsc", severity="P1", title="bsc sync stuck", source="check_sync")
    assert repeat.pk == alert.pk and repeat.occurrences == 4
    assert AlertDelivery.objects.filter(alert=alert).count() == 1 and len(enqueued) == 1
    assert Alert.objects.filter(key="sync-stuck:bsc").count() == 1

    Alert.objects.filter(pk=alert.pk).update(last_sent_at=timezone.now() - alerting.QUIET_PERIOD - timedelta(seconds=1))
    with django_capture_on_commit_callbacks(execute=True):
        repeat = raise_alert(key="sync-stuck:bsc", severity="P1", title="bsc sync stuck", source="check_sync")
    assert repeat.occurrences == 5
    assert AlertDelivery.objects.filter(alert=alert).count() == 2 and len(enqueued) == 2
    assert alerting.attempt_delivery(enqueued[-1]) == ("sent", None)
    assert "(×5)" not in json.loads(receiver.requests[-1]["body"])["title"]
    assert json.loads(receiver.requests[-1]["body"])["occurrences"] == 5


def test_alerting_acknowledge_writes_an_audit_row_and_a_raise_after_it_resolved_opens_a_new_alert(
        db, staff_user, receiver, enqueued, django_capture_on_commit_callbacks):
    webhook(receiver)
    first = raise_alert(key="secret-overdue:JWT_SECRET", severity="P2", title="JWT overdue", source="checks")
    acknowledge_alert(actor=staff_user, alert=first, verdict="true")
    first.refresh_from_db()
    assert first.acknowledged_by == staff_user and first.acknowledged_at is not None and first.verdict == "true"
    audit = AuditLog.objects.get(action="acknowledge_alert")
    assert audit.actor == staff_user and audit.object_id == str(first.pk)
    assert audit.after == {"key": "secret-overdue:JWT_SECRET", "verdict": "true", "state": "firing"}

    acknowledge_alert(actor=staff_user, alert=first, verdict="false")  # twice: still one audit row, first verdict
    assert AuditLog.objects.filter(action="acknowledge_alert").count() == 1

    # Still firing: the repeat counts on the acknowledged alert, quietly.
    with django_capture_on_commit_callbacks(execute=True):
        repeat = raise_alert(key="secret-overdue:JWT_SECRET", severity="P2", title="JWT overdue", source="checks")
    assert repeat.pk == first.pk and repeat.occurrences == 2 and enqueued == []

    settle_alerts(source="checks", scope=["secret-overdue"], raised=[])
    with django_capture_on_commit_callbacks(execute=True):
        second = raise_alert(key="secret-overdue:JWT_SECRET", severity="P2", title="JWT overdue", source="checks")
    assert second.pk != first.pk and second.occurrences == 1 and second.acknowledged_at is None
    assert len(enqueued) == 1


def test_alerting_acknowledge_without_a_verdict_is_refused_naming_the_field(db, staff_user):
    from django.core.exceptions import ValidationError

    alert = raise_alert(key="secret-overdue:JWT_SECRET", severity="P2", title="JWT overdue", source="checks")
    with pytest.raises(ValidationError) as refused:
        acknowledge_alert(actor=staff_user, alert=alert, verdict="")
    assert "verdict" in refused.value.message_dict and "True alarm" in refused.value.message_dict["verdict"][0]
    alert.refresh_from_db()
    assert alert.acknowledged_at is None


def test_alerting_bot_token_never_appears_in_errors_or_logs(db, receiver, caplog):
    caplog.set_level(logging.DEBUG, logger="ops")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: a connection error carrying the URL
    channel = AlertChannel.objects.create(name="dead-telegram", kind="telegram", url=dead, chat_id="-1",
                                          secret_env="TEST_TELEGRAM_BOT_TOKEN")
    for _ in range(alerting.BREAKER_FAILURES):
        d = delivery(channel)
        status, _retry = alerting.attempt_delivery(d.pk)
        assert status == "pending"
    d.refresh_from_db()
    channel.refresh_from_db()
    assert d.last_error == "ConnectionError"
    assert channel.open_until is not None

    refusing = telegram(receiver, name="refusing-telegram")
    receiver.statuses = [401]
    d2 = delivery(refusing)
    alerting.attempt_delivery(d2.pk)
    d2.refresh_from_db()
    assert d2.last_error == "HTTP 401"

    stored = [*AlertDelivery.objects.values_list("last_error", flat=True),
              *AlertChannel.objects.values_list("last_error", flat=True)]
    assert not any(BOT_TOKEN in e or BOT_TOKEN.split(":")[1] in e for e in stored)
    assert "alert channel dead-telegram opened" in caplog.text
    assert BOT_TOKEN not in caplog.text and BOT_TOKEN.split(":")[1] not in caplog.text


def test_alerting_telegram_without_its_token_variable_fails_with_the_variable_named(db, receiver, monkeypatch):
    monkeypatch.delenv("TEST_TELEGRAM_BOT_TOKEN")
    d = delivery(telegram(receiver))
    assert alerting.attempt_delivery(d.pk) == ("pending", 5)
    d.refresh_from_db()
    assert d.last_error == "the bot token variable TEST_TELEGRAM_BOT_TOKEN is not set"
    assert receiver.requests == []


def test_alert_page_acknowledges_instead_of_saving_nothing(client, django_user_model):
    from django.contrib.auth.models import Group

    from backoffice.alerts.models import Alert
    from backoffice.audit.models import AuditLog

    alert = Alert.objects.create(key="k:page", severity="P1", title="Sync lag", source="test")
    viewer = django_user_model.objects.create_user("vera", is_staff=True)
    viewer.groups.set([Group.objects.get(name="viewer")])
    admin_user = django_user_model.objects.create_user("olga", is_staff=True)
    admin_user.groups.set([Group.objects.get(name="ops admin")])
    url = f"/admin/alerts/alert/{alert.pk}/change/"

    client.force_login(viewer)
    page = client.get(url).content.decode()
    assert 'name="_acknowledge"' not in page and 'name="_save"' not in page
    assert client.post(url, {"_acknowledge": "true"}).status_code == 403

    client.force_login(admin_user)
    page = client.get(url).content.decode()
    assert 'name="_acknowledge"' in page and 'name="_save"' not in page
    nothing = client.post(url, {"_save": "Save"})
    assert nothing.status_code == 302 and nothing["Location"] == url
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    done = client.post(url, {"_acknowledge": "false"})
    assert done.status_code == 302 and done["Location"] == "/admin/alerts/alert/"
    alert.refresh_from_db()
    assert alert.acknowledged_by == admin_user and alert.verdict == "false"
    assert AuditLog.objects.filter(action="acknowledge_alert", actor_label="olga").count() == 1
    again = client.get(url).content.decode()
    assert 'name="_acknowledge"' not in again and "Acknowledged by olga" in again and "as false alarm" in again


def test_alerting_pagerduty_channel_refuses_a_floor_below_p1(db):
    from django.core.exceptions import ValidationError

    channel = AlertChannel(name="on-call", kind="pagerduty", secret_env="PD_KEY", min_severity="P3")
    with pytest.raises(ValidationError, match="PagerDuty pages people"):
        channel.full_clean()
    channel.min_severity = "P1"
    channel.full_clean()
