"""/health (public status for monitors, details for the metrics token or staff) and /metrics (not public)."""
from __future__ import annotations

import hmac
import ipaddress
import time

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView

from backoffice.permissions import has_role

from . import health as health_checks
from . import metrics as metrics_module


def _bearer_token_ok(request) -> bool:
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    return bool(token) and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token)


def _verified_staff(request) -> bool:
    """Active staff with a role whose session passed the second factor, as the admin site asks: the password step
    alone is not a staff login (django-otp's is_verified; the user is anonymous when the session stack did not run),
    and staff with no role see no business state, here as on the dashboard."""
    user = getattr(request, "user", None)
    return (user is not None and user.is_authenticated and user.is_active and user.is_staff
            and getattr(user, "is_verified", lambda: False)() and has_role(user))


def public_health(payload: dict) -> dict:
    """What anyone may read: the overall status and each check's status, nothing about queues, memory, blocks
    or schedule names (a load balancer or an uptime check needs no more)."""
    return {"status": payload["status"],
            "checks": {name: {"status": check.get("status", "error")} for name, check in payload["checks"].items()}}


@never_cache
@require_GET
def health(request):
    payload = health_checks.health()
    if not (_bearer_token_ok(request) or _verified_staff(request)):
        payload = public_health(payload)
    return JsonResponse(payload, status=503 if payload["status"] == "error" else 200)


def _metrics_allowed(request) -> bool:
    """A bearer token (METRICS_TOKEN), the session of staff with a role that passed the second factor, or — in
    development only, without a token configured — loopback."""
    if _bearer_token_ok(request) or _verified_staff(request):
        return True
    if not settings.PRODUCTION and not settings.METRICS_TOKEN:
        try:
            return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
        except ValueError:
            return False
    return False


@never_cache
@require_GET
def metrics(request):
    """The registry rendered at most once a second, by one request at a time; others get that body."""
    if not _metrics_allowed(request):
        return HttpResponseForbidden("metrics need a bearer token (METRICS_TOKEN) or a staff login with a role that "
                                     "passed the second factor (the one-time code)\n", content_type="text/plain")
    # Prometheus scrapes every 15 s or so: a body rendered within the last second is as good as new.
    cache = metrics_module.rendered
    if time.monotonic() - cache["at"] >= metrics_module.RENDER_SECONDS and \
            metrics_module.render_lock.acquire(blocking=not cache["body"]):
        try:
            response = ExportToDjangoView(request)
            cache.update(at=time.monotonic(), body=response.content, content_type=response["Content-Type"])
        finally:
            metrics_module.render_lock.release()
    return HttpResponse(cache["body"], content_type=cache["content_type"])


class MonitoringMiddleware:
    """First in the stack: /health, and /metrics with a bearer token, are answered before sessions,
    authentication, OTP and lockout run — monitors poll them often, and they need none of it.
    (A request with a session cookie and no token goes through the whole stack as usual: a staff member's
    /metrics, or /health with the details, needs the session's second factor.)"""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        bearer = request.headers.get("Authorization", "").startswith("Bearer ")
        if request.path == "/health" and (bearer or settings.SESSION_COOKIE_NAME not in request.COOKIES):
            return self._sized(health(request))
        if request.path == "/metrics" and bearer:
            return self._sized(metrics(request))
        return self.get_response(request)

    @staticmethod
    def _sized(response):
        # CommonMiddleware, which this skips, is what normally sets it; keep-alive clients rely on it.
        response.headers["Content-Length"] = str(len(response.content))
        return response
