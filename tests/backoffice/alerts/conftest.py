"""Fixtures of the alert tests: a local HTTP receiver standing in for Telegram, webhooks and PagerDuty, the channels'
secrets in the environment, and the deliveries handed to the worker."""
from __future__ import annotations

import pytest

from backoffice.alerts import delivery as alerting
from backoffice.alerts import tasks

from .test_alerting import BOT_TOKEN, WEBHOOK_SECRET, Receiver


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(autouse=True)
def secrets_in_env(monkeypatch):
    monkeypatch.setenv("TEST_TELEGRAM_BOT_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", WEBHOOK_SECRET)


@pytest.fixture
def enqueued(monkeypatch):
    """Deliveries handed to the worker (the broker is not under test: the test runs them itself)."""
    ids: list[int] = []

    def send_task(name, **kwargs):
        # Only a delivery sent under the alert task's registered name, with its argument, is one the worker runs.
        if name == tasks.deliver_alert.name:
            ids.append(kwargs["delivery_id"])

    monkeypatch.setattr(alerting, "send_task", send_task)
    return ids
