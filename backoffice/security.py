"""Staff access: the client address behind proxies, session limits, step-up, and audited access events."""
from __future__ import annotations

import logging
import time
from functools import wraps

from django.conf import settings
from django.contrib.auth import logout
from django.db import transaction
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

logger = logging.getLogger(__name__)

SESSION_STARTED = "backoffice_auth_started"
SESSION_TOUCHED = "backoffice_touched"
RENEW_AFTER_SECONDS = 60  # the idle timeout is renewed at most once a minute, not with a write per request
STEPUP_AT = "backoffice_stepup_at"


def client_ip(request) -> str:
    """The client address for login throttling.

    Without trusted proxies (TRUSTED_PROXY_COUNT=0) only the TCP peer counts and X-Forwarded-For is
    ignored. With N trusted proxies, the address the outermost of them appended (the N-th entry from
    the right) counts: whatever a client writes to the left of it is never believed, so a spoofed
    header can neither lock anyone out nor unlock an address.
    """
    count = settings.TRUSTED_PROXY_COUNT
    if count > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if h.strip()]
        if len(hops) >= count:
            return hops[-count]
    return request.META.get("REMOTE_ADDR", "")


class SessionLimitsMiddleware:
    """Sessions end after SESSION_COOKIE_AGE idle and SESSION_MAX_HOURS after login.

    Idle: a request renews the session's expiry when the last renewal is over a minute old (the
    session is then saved with a new expiry), so an active session never lapses and an idle one
    ends within a minute of SESSION_COOKIE_AGE, without a database write on every page view.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            started = request.session.get(SESSION_STARTED)
            if started is None:
                request.session[SESSION_STARTED] = time.time()
            elif time.time() - started > settings.SESSION_MAX_HOURS * 3600:
                _audit(user, "session_expired", "absolute session lifetime reached")
                logout(request)
                return HttpResponseRedirect(reverse("admin:login") + "?" + urlencode({"next": request.path}))
            touched = request.session.get(SESSION_TOUCHED)
            if touched is None or time.time() - touched > RENEW_AFTER_SECONDS:
                request.session[SESSION_TOUCHED] = time.time()
        return self.get_response(request)


class AccessAuditMiddleware:
    """Audits permission denials. (Superuser use is audited on every audit row: `as_superuser`.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            if response.status_code == 403:
                _audit(user, "permission_denied", f"{request.method} {request.path[:300]}")
        return response


def _audit(actor, action: str, reason: str, object_repr: str = "") -> None:
    from backoffice.audit.services import record_audit

    try:
        with transaction.atomic():
            record_audit(actor=actor, action=action, object_type="auth", object_id="", reason=reason,
                         after={"detail": object_repr} if object_repr else None)
    except Exception:  # auditing must never turn a response into an error page
        logger.exception("access audit failed for %s", action)


def stepup_is_fresh(request) -> bool:
    at = request.session.get(STEPUP_AT)
    return at is not None and time.time() - at < settings.STEPUP_SECONDS


def stepup_required(view=None, *, methods: tuple[str, ...] = ("GET", "POST")):
    """A fresh one-time code (within STEPUP_SECONDS) before signing, blacklisting or recording a rotation.

    `methods=("POST",)` for pages that only read on GET (the step-up comes when acting).
    """
    if view is None:
        return lambda v: stepup_required(v, methods=methods)

    @wraps(view)
    def wrapper(*args, **kwargs):
        request = next(a for a in args if hasattr(a, "session"))
        if request.method in methods and not stepup_is_fresh(request):
            target = request.get_full_path()
            if request.method != "GET":
                target = request.META.get("HTTP_REFERER") or target
            if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
                target = reverse("admin:index")
            return HttpResponseRedirect(reverse("admin:stepup") + "?" + urlencode({"next": target}))
        return view(*args, **kwargs)

    return wrapper
