"""The alert lifecycle against a real local HTTP receiver: firing, resolved by its check (the resolution sent to the
channels that had the fire: webhook, PagerDuty's resolve on the same dedup key, Telegram's text), acknowledged with
a verdict; flapping, inhibition, escalation, clean runs, and each rule's precision."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.alerts import delivery as alerting
from backoffice.alerts import services
from backoffice.alerts.models import Alert, AlertChannel, AlertDelivery
from backoffice.alerts.selectors import precision_by_rule
from backoffice.audit.models import AuditLog

from .test_alerting import BOT_TOKEN, telegram, webhook

pytestmark = pytest.mark.django_db

ROUTING_KEY = "pd-routing-key-0123456789"


def pagerduty(receiver, monkeypatch) -> AlertChannel:
    monkeypatch.setenv("TEST_PD_KEY", ROUTING_KEY)
    return AlertChannel.objects.create(name="pd", kind="pagerduty", url=f"{receiver.url}/v2/enqueue",
                                       secret_env="TEST_PD_KEY", min_severity="P1")


def deliver_all(ids: list[int]) -> None:
    for delivery_id in ids:
        assert alerting.attempt_delivery(delivery_id) == ("sent", None)
    ids.clear()


def raise_sync_stuck(severity: str = "P1", **extra) -> Alert:
    return services.raise_alert(key="sync-stuck:bsc", severity=severity, title="bsc event sync stuck",
                                message="RB-03", source="check_sync", **extra)


def test_lifecycle_firing_resolved_then_acknowledged_with_each_channels_messages(
        receiver, enqueued, monkeypatch, staff_user, django_capture_on_commit_callbacks):
    webhook(receiver)
    pd = pagerduty(receiver, monkeypatch)
    telegram(receiver)
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_sync_stuck()
    assert alert.state == "firing" and len(enqueued) == 3
    deliver_all(enqueued)
    fired = {r["path"]: json.loads(r["body"]) for r in receiver.requests}
    assert fired["/v2/enqueue"]["event_action"] == "trigger"
    assert fired["/v2/enqueue"]["dedup_key"] == f"sync-stuck:bsc#{alert.pk}"
    assert fired["/hooks/alerts"]["status"] == "firing"

    receiver.requests.clear()
    with django_capture_on_commit_callbacks(execute=True):
        [resolved] = services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    assert resolved.pk == alert.pk and resolved.state == "resolved" and resolved.acknowledged_at is None
    assert resolved.resolution == "cleared: check_sync found it clear"
    assert AuditLog.objects.get(action="resolve_alert").actor_label == "system:check_sync"
    assert len(enqueued) == 3 and AlertDelivery.objects.filter(alert=alert, event="resolve").count() == 3
    deliver_all(enqueued)
    sent = {r["path"]: json.loads(r["body"]) for r in receiver.requests}
    assert sent["/v2/enqueue"] == {"routing_key": ROUTING_KEY, "event_action": "resolve",
                                   "dedup_key": f"sync-stuck:bsc#{alert.pk}"}
    assert sent["/hooks/alerts"]["status"] == "resolved" and sent["/hooks/alerts"]["resolution"].startswith("cleared")
    assert sent[f"/bot{BOT_TOKEN}/sendMessage"]["text"].startswith("[RESOLVED] [P1] bsc event sync stuck\ncleared")

    services.acknowledge_alert(actor=staff_user, alert=resolved, verdict="false")
    resolved.refresh_from_db()
    assert resolved.verdict == "false" and resolved.state == "resolved"
    assert pd.deliveries.count() == 2


def test_lifecycle_a_resolution_waits_for_its_fire_still_pending_on_the_same_channel(
        receiver, enqueued, monkeypatch, django_capture_on_commit_callbacks):
    pagerduty(receiver, monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_sync_stuck()
    [fire] = enqueued
    Alert.objects.filter(pk=alert.pk).update(last_sent_at=timezone.now())  # as if the fire's task were under way
    with django_capture_on_commit_callbacks(execute=True):
        services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    [_fire, resolve] = enqueued

    assert alerting.attempt_delivery(resolve) == ("pending", alerting.FIRE_FIRST_SECONDS)
    assert receiver.requests == [], "nothing reaches PagerDuty before the trigger"
    assert alerting.attempt_delivery(fire) == ("sent", None)
    assert alerting.attempt_delivery(resolve) == ("sent", None)
    assert [json.loads(r["body"])["event_action"] for r in receiver.requests] == ["trigger", "resolve"]


def test_lifecycle_a_resolution_is_not_held_for_a_fire_the_sweep_no_longer_retries(
        receiver, enqueued, monkeypatch, django_capture_on_commit_callbacks):
    pagerduty(receiver, monkeypatch)
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_sync_stuck()
    Alert.objects.filter(pk=alert.pk).update(last_sent_at=timezone.now())
    AlertDelivery.objects.filter(pk=enqueued[0]).update(created_at=timezone.now() - alerting.SWEEP_MAX_AGE
                                                        - timedelta(minutes=1))  # its task lost, out of reach
    with django_capture_on_commit_callbacks(execute=True):
        services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    assert alerting.attempt_delivery(enqueued[-1]) == ("sent", None), "not held for ever"


def test_lifecycle_a_resolution_goes_only_to_the_channels_that_had_the_fire(
        receiver, enqueued, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        alert = raise_sync_stuck()
    webhook(receiver)  # added after the fire: it never heard of it
    with django_capture_on_commit_callbacks(execute=True):
        services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    assert enqueued == [] and not alert.deliveries.exists()


def test_lifecycle_clean_runs_and_scope_decide_what_resolves(settings):
    settings.ALERT_CLEAN_RUNS = 2
    bsc = raise_sync_stuck()
    eth = services.raise_alert(key="sync-stuck:ethereum", severity="P1", title="eth stuck", source="check_sync")
    # The run could read only bsc (ethereum's RPC failed): ethereum is out of scope and stays firing, counted nothing.
    assert services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[]) == []
    bsc.refresh_from_db()
    assert bsc.state == "firing" and bsc.clean_runs == 1
    raise_sync_stuck()  # the condition came back before the second clean run: the count starts again
    bsc.refresh_from_db()
    assert bsc.clean_runs == 0
    services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    assert services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])[0].pk == bsc.pk
    eth.refresh_from_db()
    assert eth.state == "firing" and eth.clean_runs == 0


def test_lifecycle_an_alert_that_fires_and_resolves_too_often_is_flapping_and_stops_sending(
        enqueued, receiver, settings, django_capture_on_commit_callbacks):
    settings.ALERT_FLAP_LIMIT = 3
    webhook(receiver)
    sends = []
    for _ in range(4):
        with django_capture_on_commit_callbacks(execute=True):
            raise_sync_stuck()
            services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
        sends.append(len(enqueued))
        enqueued.clear()
    # Fire + resolution twice, then the third fire within the hour is flapping: neither it nor its end goes out.
    assert sends == [2, 2, 0, 0]
    assert Alert.objects.filter(key="sync-stuck:bsc", flapping=True).count() == 2

    with django_capture_on_commit_callbacks(execute=True):
        flapping = raise_sync_stuck()
    assert flapping.flapping and enqueued == []
    # It settles by firing without a break: its next repeat after FLAP_SETTLE goes out, and it is no longer flapping.
    Alert.objects.filter(pk=flapping.pk).update(created_at=timezone.now() - services.FLAP_SETTLE)
    with django_capture_on_commit_callbacks(execute=True):
        settled = raise_sync_stuck()
    assert settled.pk == flapping.pk and not settled.flapping and len(enqueued) == 1


def test_lifecycle_a_flapping_alert_that_settled_and_was_sent_sends_its_resolution(
        enqueued, receiver, monkeypatch, settings, django_capture_on_commit_callbacks):
    settings.ALERT_FLAP_LIMIT = 3
    pd = pagerduty(receiver, monkeypatch)
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            raise_sync_stuck()
            services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    with django_capture_on_commit_callbacks(execute=True):
        flapping = raise_sync_stuck()
    Alert.objects.filter(pk=flapping.pk).update(created_at=timezone.now() - services.FLAP_SETTLE)
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        settled = raise_sync_stuck()  # fired without a break: it settles, and its fire opens a PagerDuty incident
    with django_capture_on_commit_callbacks(execute=True):
        services.settle_alerts(source="check_sync", scope=["sync-stuck:bsc"], raised=[])
    assert len(enqueued) == 2, "the fire, then its resolution: the incident it opened is closed"
    deliver_all(enqueued)
    bodies = [json.loads(r["body"]) for r in receiver.requests]
    assert [(b["event_action"], b["dedup_key"]) for b in bodies] == [
        ("trigger", f"sync-stuck:bsc#{settled.pk}"), ("resolve", f"sync-stuck:bsc#{settled.pk}")]
    assert pd.deliveries.filter(alert=settled).count() == 2


def test_lifecycle_an_inhibited_alert_is_recorded_but_not_sent_until_its_cause_lifts(
        enqueued, receiver, django_capture_on_commit_callbacks):
    webhook(receiver)
    with django_capture_on_commit_callbacks(execute=True):
        alert = services.raise_alert(key="timeouts-overdue:bsc", severity="P2", title="overdue", source="c",
                                     inhibited="bsc is paused: the keeper skips it on purpose")
    assert alert.inhibited.startswith("bsc is paused") and alert.last_sent_at is None and enqueued == []
    with django_capture_on_commit_callbacks(execute=True):
        again = services.raise_alert(key="timeouts-overdue:bsc", severity="P2", title="overdue", source="c")
    assert again.pk == alert.pk and again.inhibited == "" and len(enqueued) == 1


def test_lifecycle_an_observation_confirmed_as_a_page_is_sent_at_once(
        enqueued, receiver, django_capture_on_commit_callbacks):
    webhook(receiver)
    with django_capture_on_commit_callbacks(execute=True):
        raise_sync_stuck(severity="P3")
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        worse = raise_sync_stuck(severity="P1")
    assert worse.severity == "P1" and len(enqueued) == 1, "an escalation is no quiet repeat"


def test_lifecycle_precision_by_rule_from_the_verdicts(staff_user):
    def alert(key: str, verdict: str = "", resolved: bool = False, ack_after: timedelta | None = None) -> None:
        row = services.raise_alert(key=key, severity="P1", title=key, source="t")
        if resolved:
            services.resolve_alert(alert=row, resolution="cleared")
        if verdict:
            services.acknowledge_alert(actor=staff_user, alert=row, verdict=verdict)
            Alert.objects.filter(pk=row.pk).update(acknowledged_at=row.created_at + ack_after)

    alert("escrow-insolvent:bsc", "true", ack_after=timedelta(minutes=4))
    alert("escrow-insolvent:ethereum", "false", resolved=True, ack_after=timedelta(minutes=10))
    alert("escrow-insolvent:base", "false", ack_after=timedelta(minutes=2))
    alert("sync-lag:bsc", "test", ack_after=timedelta(minutes=1))
    alert("sync-lag:ethereum", resolved=True)
    old = services.raise_alert(key="escrow-insolvent:old", severity="P0", title="old", source="t")
    Alert.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))

    rows = {r.rule: r for r in precision_by_rule()}
    insolvent, lag = rows["escrow-insolvent"], rows["sync-lag"]
    counts = (insolvent.fired, insolvent.resolved_by_itself, insolvent.marked_true, insolvent.marked_false)
    assert counts == (3, 1, 1, 2)
    assert insolvent.precision == pytest.approx(1 / 3) and insolvent.precision_text == "33%"
    assert insolvent.median_to_acknowledge == timedelta(minutes=4)
    assert (lag.fired, lag.resolved_by_itself, lag.marked_test, lag.precision) == (2, 1, 1, None)
    assert lag.precision_text == "—"


def test_lifecycle_alerts_page_shows_precision_and_filters_by_state(admin_client, staff_user):
    firing = raise_sync_stuck()
    gone = services.raise_alert(key="sync-lag:bsc", severity="P2", title="lag", source="check_sync")
    services.resolve_alert(alert=gone, resolution="cleared")
    page = admin_client.get("/admin/alerts/alert/").content.decode()
    assert "Precision by rule, last 30 days" in page and ">sync-stuck</a>" in page
    only_firing = admin_client.get("/admin/alerts/alert/?state=firing").content.decode()
    assert f"/admin/alerts/alert/{firing.pk}/change/" in only_firing
    assert f"/admin/alerts/alert/{gone.pk}/change/" not in only_firing
    waiting = admin_client.get("/admin/alerts/alert/?state=resolved_unacknowledged").content.decode()
    assert f"/admin/alerts/alert/{gone.pk}/change/" in waiting
