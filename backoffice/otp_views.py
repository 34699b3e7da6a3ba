"""Second factor for every staff login (django-otp TOTP + backup codes), and the step-up check.

Password first (the admin's login form, throttled by django-axes), then this: enrolment on the
first login (QR code and secret, confirmed by a code, ten backup codes shown once), afterwards a
code on every login. The admin site refuses any user whose session is not OTP-verified.
"""
from __future__ import annotations

import time
from datetime import datetime

import django_otp
import segno
from django import forms
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django_otp.models import VerifyNotAllowed
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from .durations import human_duration
from .security import STEPUP_AT, _audit

BACKUP_CODES = 10


class CodeForm(forms.Form):
    code = forms.CharField(max_length=16, label="one-time code",
                           widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                                         "autofocus": True}),
                           help_text="The 6 digits of your authenticator app, or one of your backup codes.")

    def clean_code(self):
        code = "".join(self.cleaned_data["code"].split()).lower()
        if not code.isalnum():
            raise forms.ValidationError("Type the code as shown: digits (or letters and digits for a backup code).")
        return code


class Throttling:
    """Which of a user's devices refuse every code for now (django-otp's throttling: after each wrong code a
    device waits 1, 2, 4, 8 … seconds before it checks another), and until when. Read before a code is
    checked, so that what the refusal says does not depend on whether the code was right."""

    def __init__(self, devices):
        devices = list(devices)
        self.until: dict[str, datetime] = {}
        throttled = 0
        for device in devices:
            allowed, info = device.verify_is_allowed()
            if not allowed and info and info.get("reason") == VerifyNotAllowed.N_FAILED_ATTEMPTS:
                kind = "your backup codes" if isinstance(device, StaticDevice) else "codes from your authenticator app"
                self.until[kind] = max(self.until.get(kind, info["locked_until"]), info["locked_until"])
                throttled += 1
        self.every_device = bool(devices) and throttled == len(devices)

    def audit_reason(self) -> str:
        if not self.until:
            return "wrong or reused one-time code"
        if self.every_device:
            return "code not checked: every device throttled after wrong codes"
        return "wrong or reused one-time code; a device throttled after wrong codes did not check it"

    def refusal(self, wrong: str) -> str:
        """Why no device accepted the code: `wrong` when each one checked it; otherwise which ones did not check
        it (right or wrong), for how long and until when, and what to do."""
        if not self.until:
            return wrong
        until = max(self.until.values())
        wait = human_duration(max((until - timezone.now()).total_seconds(), 1))
        throttled = (f"{' and '.join(sorted(self.until))} are refused for now, right or wrong, for another {wait} "
                     f"(until {until:%H:%M:%S} UTC)")
        if self.every_device:
            return f"Too many wrong codes: {throttled}. Wait until then, then type the current code."
        return f"That code is not valid (or was already used); after too many wrong codes, {throttled}."


def _next(request, default: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or default
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        return default
    return target


def _page(request, template: str, **context):
    from django.contrib import admin

    return TemplateResponse(request, template, {**admin.site.each_context(request), **context})


@never_cache
@sensitive_post_parameters("code")
@login_required(login_url="admin:login")
def otp_view(request):
    """Verify a code, or enrol a first authenticator."""
    user = request.user
    if not (user.is_active and user.is_staff):
        # Only staff have a second factor; others get the admin's own "not authorized" login page.
        return HttpResponseRedirect(reverse("admin:login"))
    target = _next(request, reverse("admin:index"))
    if user.is_verified():
        return HttpResponseRedirect(target)
    if not django_otp.user_has_device(user):
        return _enrol(request, target)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        throttling = Throttling(django_otp.devices_for_user(user))
        device = django_otp.match_token(user, form.cleaned_data["code"])
        if device is not None:
            django_otp.login(request, device)
            request.session[STEPUP_AT] = time.time()
            _audit(user, "login_second_factor", f"verified with {device.__class__.__name__}")
            return HttpResponseRedirect(target)
        _audit(user, "login_second_factor_failed", throttling.audit_reason())
        form.add_error("code", throttling.refusal("That code is not valid (or was already used). Try the current one."))
    return _page(request, "admin/otp_verify.html", title="Two-factor authentication", form=form, next=target)


def _enrol(request, target: str):
    user = request.user
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first() or \
        TOTPDevice.objects.create(user=user, name="authenticator", confirmed=False)
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        throttling = Throttling([device])
        if device.verify_token(form.cleaned_data["code"]):
            with transaction.atomic():
                device.confirmed = True
                device.save(update_fields=["confirmed"])
                backup, _ = StaticDevice.objects.get_or_create(user=user, name="backup codes")
                backup.token_set.all().delete()
                codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
                StaticToken.objects.bulk_create([StaticToken(device=backup, token=c) for c in codes])
            django_otp.login(request, device)
            request.session[STEPUP_AT] = time.time()
            _audit(user, "second_factor_enrolled", "authenticator app and backup codes")
            return _page(request, "admin/otp_backup_codes.html", title="Your backup codes", codes=codes,
                         next=target)
        form.add_error("code", throttling.refusal(
            "That code does not match: check the phone's clock and type the current code."))
    qr = segno.make(device.config_url, error="m").svg_inline(scale=4)
    secret = device.config_url.split("secret=")[1].split("&")[0]
    return _page(request, "admin/otp_enrol.html", title="Set up two-factor authentication", form=form, qr=qr,
                 secret=secret, next=target)


@never_cache
@sensitive_post_parameters("code")
def stepup_view(request):
    """A fresh code before a sensitive step (signing, blacklisting, recording a secret rotation)."""
    from django.contrib import admin

    if not admin.site.has_permission(request):
        return HttpResponseRedirect(reverse("admin:login"))
    target = _next(request, reverse("admin:index"))
    form = CodeForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        throttling = Throttling(django_otp.devices_for_user(request.user))
        device = django_otp.match_token(request.user, form.cleaned_data["code"])
        if device is not None:
            request.session[STEPUP_AT] = time.time()
            _audit(request.user, "step_up", "fresh one-time code")
            return HttpResponseRedirect(target)
        _audit(request.user, "step_up_failed", throttling.audit_reason())
        form.add_error("code", throttling.refusal("That code is not valid (or was already used)."))
    return _page(request, "admin/otp_stepup.html", title="Confirm with a one-time code", form=form, next=target)
