"""Staff access: a second factor on every login, lockout without enumeration or spoofing, session limits,
step-up before sensitive steps, audited sign-in events, and the production deploy checks.

These tests use the real login flow (password form, then the one-time code page); elsewhere
`client.force_login` stands for it (tests/conftest.py).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from base64 import b32decode
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.audit.models import AuditLog
from backoffice.security import SESSION_STARTED, SESSION_TOUCHED
from ops.models import SecretSchedule

from .staff_helpers import (
    LOGIN,
    OTP,
    STEPUP,
    after_throttle_delay,
    comparable,
    make_stepup_stale,
    password_login,
    totp_code,
)

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-at-all"
LOCKED_TEXT = "Too many failed sign-in attempts"
ADMIN_PAGES = [
    "/admin/",
    "/admin/chain/order/",
    "/admin/audit/auditlog/",
    "/admin/disputes/blacklist/add/",
    "/admin/disputes/disputedorder/rb04/",
    "/admin/ops/incident/report/",
    "/admin/dashboard/volume.csv",
    "/admin/auth/user/",
]


@pytest.fixture
def carol(django_user_model):
    """A blacklist manager with a password (Argon2: a few users only)."""
    user = django_user_model.objects.create_user("carol", password=PASSWORD, is_staff=True)
    user.groups.set([Group.objects.get(name="blacklist manager")])
    return user


def enrol(client: Client, username: str = "carol") -> tuple[TOTPDevice, list[str]]:
    """Password, then the enrolment page confirmed with the current code; returns the device and backup codes."""
    password_login(client, username, PASSWORD)
    client.get(OTP)
    device = TOTPDevice.objects.get(user__username=username)
    response = client.post(OTP, {"code": totp_code(device), "next": "/admin/"})
    return device, re.findall(r"<li>(\w+)</li>", response.content.decode())


def verified_client(username: str = "carol") -> tuple[Client, TOTPDevice]:
    client = Client()
    device, _ = enrol(client, username)
    return client, device


# ---------------------------------------------------------------- second factor

def test_first_login_enrols_an_authenticator_then_shows_ten_backup_codes(client, carol):
    response = password_login(client, "carol", PASSWORD, follow=True)
    assert response.redirect_chain[-1][0] == OTP + "?next=%2Fadmin%2F"
    page = response.content.decode()
    device = TOTPDevice.objects.get(user=carol)
    assert not device.confirmed
    assert 'class="segno"' in page  # the QR code, an inline SVG
    secret = device.config_url.split("secret=")[1].split("&")[0]
    assert secret in page
    assert b32decode(secret + "=" * (-len(secret) % 8)) == device.bin_key

    wrong = client.post(OTP, {"code": "000000" if totp_code(device) != "000000" else "111111", "next": "/admin/"})
    assert wrong.status_code == 200 and "does not match" in wrong.content.decode()
    device.refresh_from_db()
    assert not device.confirmed
    assert client.get("/admin/").status_code == 302

    after_throttle_delay(device)
    done = client.post(OTP, {"code": totp_code(device), "next": "/admin/"})
    assert done.status_code == 200
    codes = re.findall(r"<li>(\w+)</li>", done.content.decode())
    assert len(set(codes)) == 10
    assert set(codes) == set(StaticToken.objects.filter(device__user=carol).values_list("token", flat=True))
    device.refresh_from_db()
    assert device.confirmed

    index = client.get("/admin/")
    assert index.status_code == 200
    assert "Operations dashboard" in index.content.decode()


def test_a_later_login_asks_for_the_code_of_the_enrolled_authenticator(carol):
    device, _ = enrol(Client())

    client = Client()
    response = password_login(client, "carol", PASSWORD, follow=True)
    assert response.redirect_chain[-1][0].startswith(OTP)
    assert "Enter the code from your authenticator app" in response.content.decode()
    secret = device.config_url.split("secret=")[1].split("&")[0]
    assert 'class="segno"' not in response.content.decode() and secret not in response.content.decode()
    assert TOTPDevice.objects.filter(user=carol).count() == 1
    assert client.get("/admin/").status_code == 302

    verified = client.post(OTP, {"code": totp_code(device, steps_ahead=1), "next": "/admin/"})
    assert verified.status_code == 302 and verified["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_a_backup_code_works_once_and_not_twice(carol):
    _, codes = enrol(Client())

    first = Client()
    password_login(first, "carol", PASSWORD)
    assert first.post(OTP, {"code": codes[3], "next": "/admin/"}).status_code == 302
    assert first.get("/admin/").status_code == 200
    assert StaticToken.objects.filter(device__user=carol).count() == 9

    second = Client()
    password_login(second, "carol", PASSWORD)
    refused = second.post(OTP, {"code": codes[3], "next": "/admin/"})
    assert refused.status_code == 200
    assert "not valid (or was already used)" in refused.content.decode()
    assert second.get("/admin/").status_code == 302


def _throttle(user) -> None:
    """What 15 wrong codes leave behind, the last one 30 s ago: every device of the user waits 2^14 s after it
    before it checks another (the remaining 4 h 32 min 34 s read the same for half a minute)."""
    from django_otp.plugins.otp_static.models import StaticDevice

    for model in (TOTPDevice, StaticDevice):
        model.objects.filter(user=user).update(throttling_failure_count=15,
                                               throttling_failure_timestamp=timezone.now() - timedelta(seconds=30))


def test_a_throttled_device_says_so_and_for_how_long_whether_the_code_is_right_or_wrong(carol):
    """Issue 22, finding 7: after 15 wrong codes the right one got the generic "not valid (or already used)"."""
    device, _ = enrol(Client())
    client = Client()
    password_login(client, "carol", PASSWORD)
    _throttle(carol)
    right = totp_code(device, steps_ahead=1)
    wrong = "000000" if right != "000000" else "111111"

    answers = [client.post(OTP, {"code": code, "next": "/admin/"}) for code in (right, wrong)]

    errors = [re.findall(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', a.content.decode(), re.S) for a in answers]
    assert [a.status_code for a in answers] == [200, 200]
    assert errors[0] == errors[1]  # nothing tells a right code from a wrong one
    text = errors[0][0]
    assert "Too many wrong codes" in text and "refused for now, right or wrong" in text
    assert "for another 4 h 32 min (until " in text and " UTC)" in text
    assert "not valid" not in text
    assert client.get("/admin/").status_code == 302
    assert AuditLog.objects.filter(action="login_second_factor_failed", reason__contains="throttled").count() == 2

    # Once the wait is over, the right code is accepted.
    after_throttle_delay(device)
    from django_otp.plugins.otp_static.models import StaticDevice

    StaticDevice.objects.filter(user=carol).update(throttling_failure_timestamp=None)
    assert client.post(OTP, {"code": right, "next": "/admin/"}).status_code == 302
    assert client.get("/admin/").status_code == 200


def test_a_throttled_device_says_so_at_the_step_up_too(carol):
    client, device = verified_client()
    make_stepup_stale(client)
    _throttle(carol)

    response = client.post(STEPUP, {"code": totp_code(device, steps_ahead=1), "next": "/admin/"})

    assert response.status_code == 200
    assert "Too many wrong codes" in response.content.decode() and "for another " in response.content.decode()
    assert AuditLog.objects.filter(action="step_up_failed", reason__contains="throttled").exists()


@pytest.mark.parametrize("url", ADMIN_PAGES)
def test_without_the_second_factor_every_admin_page_redirects_to_login_and_shows_nothing(carol, url):
    enrol(Client())
    client = Client()
    assert password_login(client, "carol", PASSWORD).status_code == 302

    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(LOGIN)
    assert response.content == b""
    follow = client.get(response["Location"])
    assert follow.status_code == 302 and follow["Location"].startswith(OTP)
    assert client.post(url, {}).status_code == 302


@pytest.mark.parametrize("next_url", ["/admin/", "/admin/audit/auditlog/", "//evil.example/admin/",
                                      "https://evil.example/", "/admin/otp/?next=/admin/"])
def test_no_next_parameter_skips_the_second_factor(carol, next_url, settings):
    settings.DEBUG = True  # not even development settings turn it off
    enrol(Client())
    client = Client()
    response = password_login(client, "carol", PASSWORD, next_url=next_url, follow=True)
    assert response.redirect_chain[-1][0].startswith(OTP)
    assert "Enter the code" in response.content.decode()
    assert client.get(OTP, {"next": next_url}).status_code == 200  # the code form, not a redirect onwards
    assert client.get("/admin/").status_code == 302
    assert client.get(LOGIN, {"next": "/admin/"})["Location"].startswith(OTP)


def test_a_non_staff_user_cannot_enrol_or_reach_the_admin(django_user_model):
    django_user_model.objects.create_user("nora", password=PASSWORD)
    client = Client()
    response = password_login(client, "nora", PASSWORD)
    assert response.status_code == 200  # the admin's login form: "not authorized"
    client.force_login(django_user_model.objects.get(username="nora"))
    assert client.get(OTP)["Location"].startswith(LOGIN)
    assert not TOTPDevice.objects.filter(user__username="nora").exists()
    assert client.get("/admin/")["Location"].startswith(LOGIN)


# ---------------------------------------------------------------- lockout

def test_five_wrong_passwords_lock_the_account_even_for_the_right_password(client, carol):
    for _ in range(4):
        assert password_login(client, "carol", WRONG).status_code == 200
    fifth = password_login(client, "carol", WRONG)
    assert fifth.status_code in (403, 429) and LOCKED_TEXT in fifth.content.decode()

    right = password_login(client, "carol", PASSWORD)
    assert right.status_code in (403, 429)
    assert LOCKED_TEXT in right.content.decode()
    assert "_auth_user_id" not in client.session


def test_lockout_answers_the_same_for_an_unknown_username(carol):
    """Same status and page at every step whether the account exists or not: no account enumeration."""
    known, unknown = Client(), Client()
    for attempt in [WRONG] * 6 + [PASSWORD]:
        a = password_login(known, "carol", attempt)
        b = password_login(unknown, "cyril", attempt)  # same length: the page is compared byte for byte
        assert a.status_code == b.status_code
        assert comparable(a.content, "carol") == comparable(b.content, "cyril")
    assert a.status_code in (403, 429)


def test_a_spoofed_forwarded_for_is_ignored_without_trusted_proxies(client, carol, settings):
    settings.TRUSTED_PROXY_COUNT = 0
    attacker, victim = "203.0.113.9", "198.51.100.7"
    for _ in range(5):
        last = password_login(client, "carol", WRONG, REMOTE_ADDR=attacker, HTTP_X_FORWARDED_FOR=victim)
    assert last.status_code in (403, 429)

    # The victim's address was named in the header, but it is not locked out.
    assert password_login(Client(), "carol", PASSWORD, REMOTE_ADDR=victim).status_code == 302
    # The attacker's real address stays locked, whatever the header claims next.
    for claimed in ("192.0.2.55", victim, "127.0.0.1"):
        again = password_login(Client(), "carol", PASSWORD, REMOTE_ADDR=attacker, HTTP_X_FORWARDED_FOR=claimed)
        assert again.status_code in (403, 429), claimed


def test_behind_one_proxy_only_the_address_it_appended_counts(carol, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy, attacker, victim = "10.0.0.2", "203.0.113.9", "198.51.100.7"
    for i in range(5):
        last = password_login(Client(), "carol", WRONG, REMOTE_ADDR=proxy,
                               HTTP_X_FORWARDED_FOR=f"{victim}, 1.1.1.{i}, {attacker}")
    assert last.status_code in (403, 429)

    # Rotating the left (client-written) entries does not unlock the attacker.
    for spoof in ("9.9.9.9", victim, f"8.8.8.8, {victim}"):
        again = password_login(Client(), "carol", PASSWORD, REMOTE_ADDR=proxy,
                               HTTP_X_FORWARDED_FOR=f"{spoof}, {attacker}")
        assert again.status_code in (403, 429), spoof
    # The victim, whose address the attacker wrote on the left, signs in.
    assert password_login(Client(), "carol", PASSWORD, REMOTE_ADDR=proxy,
                          HTTP_X_FORWARDED_FOR=victim).status_code == 302


# ---------------------------------------------------------------- sessions

def test_sessions_end_after_thirty_idle_minutes_renewed_while_used(settings, carol):
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    client, _ = verified_client()
    key = client.session.session_key

    # A session in use is renewed (at most once a minute): age the last renewal by over a minute.
    session = client.session
    session[SESSION_TOUCHED] = time.time() - 61
    session.save()
    Session.objects.filter(session_key=key).update(expire_date=timezone.now() + timedelta(seconds=5))
    assert client.get("/admin/").status_code == 200
    renewed = Session.objects.get(session_key=key).expire_date
    assert renewed > timezone.now() + timedelta(minutes=29)

    Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    response = client.get("/admin/")
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)


def test_sessions_are_not_rewritten_on_every_page_view(carol):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client, _ = verified_client()
    client.get("/admin/")  # renews now
    with CaptureQueriesContext(connection) as queries:
        assert client.get("/admin/").status_code == 200
    assert not any(q["sql"].startswith("UPDATE \"django_session\"") for q in queries.captured_queries)


def test_sessions_end_twelve_hours_after_login_with_an_audit_row(carol):
    client, _ = verified_client()
    session = client.session
    assert time.time() - session[SESSION_STARTED] < 60
    session[SESSION_STARTED] = time.time() - 13 * 3600
    session.save()

    response = client.get("/admin/chain/order/")
    assert response.status_code == 302
    assert response["Location"] == LOGIN + "?next=%2Fadmin%2Fchain%2Forder%2F"
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/")["Location"].startswith(LOGIN)
    row = AuditLog.objects.get(action="session_expired")
    assert (row.actor, row.object_type) == (carol, "auth")


def test_login_issues_a_new_session_key(client, carol):
    session = client.session
    session["before_login"] = True
    session.save()
    before = client.cookies["sessionid"].value

    password_login(client, "carol", PASSWORD)
    after = client.cookies["sessionid"].value
    assert before != after
    assert not Session.objects.filter(session_key=before).exists()


def test_logout_ends_the_session(carol):
    client, _ = verified_client()
    old_key = client.cookies["sessionid"].value
    assert client.post("/admin/logout/").status_code == 200
    assert not Session.objects.filter(session_key=old_key).exists()

    replay = Client()
    replay.cookies["sessionid"] = old_key
    assert replay.get("/admin/")["Location"].startswith(LOGIN)


# ---------------------------------------------------------------- step-up

def test_blacklisting_needs_a_fresh_code_and_returns_to_the_page(carol):
    client, device = verified_client()
    add = "/admin/disputes/blacklist/add/"
    assert client.get(add).status_code == 200

    make_stepup_stale(client)
    response = client.get(add)
    assert response.status_code == 302
    assert response["Location"] == STEPUP + "?next=%2Fadmin%2Fdisputes%2Fblacklist%2Fadd%2F"

    page = client.get(response["Location"])
    assert page.status_code == 200 and "needs a fresh one-time code" in page.content.decode()
    wrong = client.post(STEPUP, {"code": "12345x", "next": add})
    assert wrong.status_code == 200 and "errorlist" in wrong.content.decode()
    assert client.get(add).status_code == 302
    assert AuditLog.objects.filter(action="step_up_failed", actor=carol).exists()

    after_throttle_delay(device)
    done = client.post(STEPUP, {"code": totp_code(device, steps_ahead=1), "next": add})
    assert done.status_code == 302 and done["Location"] == add
    assert client.get(add).status_code == 200


def test_a_step_up_code_is_not_accepted_twice(carol):
    client, device = verified_client()
    make_stepup_stale(client)
    code = totp_code(device, steps_ahead=1)
    assert client.post(STEPUP, {"code": code, "next": "/admin/"}).status_code == 302
    make_stepup_stale(client)
    after_throttle_delay(device)
    replay = client.post(STEPUP, {"code": code, "next": "/admin/"})
    assert replay.status_code == 200 and "already used" in replay.content.decode()


@pytest.mark.parametrize("url", ["/admin/disputes/blacklist/import/", "rotate", "execute",
                                 "/admin/ops/contractaction/emergency-stop/"])
def test_signing_blacklisting_and_rotations_need_step_up(url, django_user_model, settings, tmp_path):
    from ops.models import ContractAction

    settings.CHAIN_DEPLOYMENT_FILE = tmp_path / "none.json"  # no chain: nothing is simulated or sent
    admin_user = django_user_model.objects.create_user("root", is_staff=True, is_superuser=True)
    other = django_user_model.objects.create_user("approver", is_staff=True)
    if url == "rotate":
        secret = SecretSchedule.objects.first() or SecretSchedule.objects.create(name="OWNER_KEY", interval_days=90)
        url = f"/admin/ops/secretschedule/{secret.pk}/rotate/"
    elif url == "execute":
        action = ContractAction.objects.create(
            chain="bsc", kind="pause", description="pause()", to_address="0x" + "1" * 40, calldata="0x8456cb59",
            calldata_hash="0x" + "2" * 64, reason="test", status="approved", proposed_by=admin_user,
            approved_by=other)
        url = f"/admin/ops/contractaction/{action.pk}/execute/"
    client = Client()
    client.force_login(admin_user)
    assert client.get(url).status_code == 200
    make_stepup_stale(client)
    for response in (client.get(url), client.post(url, {}, HTTP_REFERER="http://testserver" + url)):
        assert response.status_code == 302
        assert response["Location"].startswith(STEPUP + "?next=")
    assert not AuditLog.objects.exclude(object_type="auth").exists()


# ---------------------------------------------------------------- audit

def test_sign_in_events_are_audited_without_passwords_or_addresses(carol, django_user_model):
    address = "198.51.100.23"
    client, device = Client(REMOTE_ADDR=address), None
    password_login(client, "carol", PASSWORD)
    client.get(OTP)
    device = TOTPDevice.objects.get(user=carol)
    client.post(OTP, {"code": totp_code(device), "next": "/admin/"})
    assert client.get("/admin/audit/auditlog/").status_code == 403  # a blacklist manager does not read the audit log
    client.post("/admin/logout/")

    stranger = Client(REMOTE_ADDR=address)
    for _ in range(5):
        password_login(stranger, "carol", WRONG)

    rows = list(AuditLog.objects.filter(object_type="auth").order_by("id"))
    by_action = {}
    for row in rows:
        by_action.setdefault(row.action, []).append(row)
    assert by_action["login"][0].actor == carol
    assert by_action["logout"][0].actor == carol
    assert by_action["permission_denied"][0].actor == carol
    assert "/admin/audit/auditlog/" in by_action["permission_denied"][0].reason
    assert len(by_action["login_failed"]) == 5
    assert {r.actor_label for r in by_action["login_failed"]} == {"anonymous:carol"}
    assert all(r.actor is None for r in by_action["login_failed"])
    assert by_action["lockout"][0].actor_label == "anonymous:carol"
    for row in rows:
        text = json.dumps({f.name: str(getattr(row, f.attname)) for f in AuditLog._meta.fields})
        for secret in (address, "127.0.0.1", PASSWORD, WRONG):
            assert secret not in text, (row.action, secret)


# ---------------------------------------------------------------- deploy checks and headers

def _production_env(**extra: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "DJANGO_ENV",
                                                               "ALLOWED_HOSTS", "REDIS_URL"}}
    return {**keep, "DJANGO_SETTINGS_MODULE": "backoffice.settings", "DJANGO_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(50), "DATABASE_URL": "postgres://bo:secret@db:5432/p2p_escrow",
            "ALLOWED_HOSTS": "backoffice.example.com",
            # Production names every chain's provider and contracts (backoffice.chain_settings).
            **{f"{p}_{k}": v for p in ("BSC", "ETH") for k, v in (("RPC_URL", "https://rpc.example.com"),
                                                                  ("ESCROW_CONTRACT", "0x" + "11" * 20),
                                                                  ("ARBITRATOR_POOL", "0x" + "22" * 20))},
            **extra}


def test_deploy_check_with_production_settings_has_no_warnings():
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=ROOT,
                            env=_production_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


def test_production_settings_secure_cookies_hsts_and_no_framing():
    code = ("import django, json; django.setup(); from django.conf import settings as s; print(json.dumps(["
            "s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.X_FRAME_OPTIONS, s.DEBUG, "
            "s.PASSWORD_HASHERS[0], s.SESSION_COOKIE_AGE, s.SESSION_MAX_HOURS]))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_production_env(), capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    secure_session, secure_csrf, hsts, frames, debug, hasher, idle, hours = json.loads(result.stdout)
    assert secure_session and secure_csrf and not debug
    assert hsts >= 365 * 24 * 3600
    assert frames == "DENY"
    assert hasher.endswith("Argon2PasswordHasher")
    assert (idle, hours) == (1800, 12)


@pytest.mark.parametrize("url", [LOGIN, "/admin/"])
def test_responses_carry_a_content_security_policy_and_deny_framing(client, url):
    response = client.get(url, follow=True)
    policy = {d.strip().split(" ")[0]: d.strip() for d in response["Content-Security-Policy"].split(";")}
    assert policy["default-src"] == "default-src 'self'"
    assert policy["frame-ancestors"] == "frame-ancestors 'none'"
    assert response["X-Frame-Options"] == "DENY"


def test_passwords_are_hashed_with_argon2(carol):
    assert carol.password.startswith("argon2$argon2id$")
