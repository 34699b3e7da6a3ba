"""/health (public, for monitors; no secrets) and /metrics (Prometheus; not public)."""
from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpResponse, HttpResponseForbidden, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from django_prometheus.exports import ExportToDjangoView

from . import health as health_checks


@never_cache
@require_GET
def health(request):
    payload = health_checks.health()
    return JsonResponse(payload, status=503 if payload["status"] == "error" else 200)


def _metrics_allowed(request) -> bool:
    """A bearer token (METRICS_TOKEN), a staff session, or — in development only — loopback."""
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    if token and header.startswith("Bearer ") and hmac.compare_digest(header[7:].strip(), token):
        return True
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_staff:
        return True
    if not settings.PRODUCTION and not token:
        try:
            return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
        except ValueError:
            return False
    return False


@never_cache
@require_GET
def metrics(request):
    if not _metrics_allowed(request):
        return HttpResponseForbidden("metrics need a bearer token (METRICS_TOKEN) or a staff login\n",
                                     content_type="text/plain")
    response = ExportToDjangoView(request)
    return response if isinstance(response, HttpResponse) else HttpResponse(response)
