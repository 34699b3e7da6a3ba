"""Helpers for the staff access tests: password logins, one-time codes, step-up staleness, comparable pages."""
from __future__ import annotations

import re
import time

from django.test import Client
from django_otp.oath import TOTP

from backoffice.security import STEPUP_AT

LOGIN = "/admin/login/"
OTP = "/admin/otp/"
STEPUP = "/admin/step-up/"


def password_login(client: Client, username: str, password: str, *, next_url: str = "/admin/", **extra):
    """The admin's own login form (throttled by axes), as a browser posts it."""
    return client.post(LOGIN, {"username": username, "password": password, "next": next_url}, **extra)


def totp_code(device, *, steps_ahead: int = 0) -> str:
    """The code the authenticator app shows now (or `steps_ahead` 30 s steps later, within the device's tolerance).

    A TOTP code is accepted once per time step: a second login in the same test uses the next step's code.
    """
    device.refresh_from_db()
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def after_throttle_delay(device) -> None:
    """django-otp refuses any code for a moment after a wrong one; act as if the person retried a little later."""
    type(device).objects.filter(pk=device.pk, throttling_failure_timestamp__isnull=False).update(
        throttling_failure_timestamp=None)


def make_stepup_stale(client: Client, seconds_ago: int = 3600) -> None:
    session = client.session
    session[STEPUP_AT] = time.time() - seconds_ago
    session.save()


_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"')


def comparable(body: bytes, *usernames: str) -> str:
    """A page without its CSRF token and with the typed username blanked out."""
    text = _CSRF.sub('name="csrfmiddlewaretoken" value=""', body.decode())
    for name in usernames:
        text = text.replace(name, "<username>")
    return text
