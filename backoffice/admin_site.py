"""The back office's admin site: two-factor staff only, and its index is the operations dashboard."""
from __future__ import annotations

from functools import update_wrapper

from django.contrib import admin
from django.http import HttpResponseBadRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Escrow operations back office"
    site_title = "Escrow back office"
    index_title = "Operations dashboard"
    index_template = "admin/dashboard.html"

    def has_permission(self, request) -> bool:
        """Active staff whose session passed the second factor (no setting turns this off)."""
        user = request.user
        return user.is_active and user.is_staff and getattr(user, "is_verified", lambda: False)()

    def admin_view(self, view, cacheable=False):
        """Every admin page refuses a NUL character in its parameters with a 400: PostgreSQL text cannot hold
        one, so a list filter or search term carrying it (``?chain__exact=%00``) would otherwise end in a 500.
        (Form fields refuse it on their own; filters, search and hand-read parameters do not.)"""
        inner = super().admin_view(view, cacheable)

        def refuse_nul(request, *args, **kwargs):
            params = [request.GET] + ([request.POST] if request.method == "POST" else [])
            if any("\x00" in key or any("\x00" in v for v in values)
                   for query in params for key, values in query.lists()):
                return HttpResponseBadRequest("A parameter contains a NUL (0x00) character, which no field "
                                              "accepts: remove it and try again.", content_type="text/plain")
            return inner(request, *args, **kwargs)

        return update_wrapper(refuse_nul, inner)

    def login(self, request, extra_context=None):
        """Password first; a signed-in but not yet OTP-verified user goes on to the second factor."""
        for params in ("GET", "POST"):
            target = getattr(request, params).get("next")
            if target and not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()},
                                                              require_https=request.is_secure()):
                # An off-site ?next= would send the user to LOGIN_REDIRECT_URL (/accounts/profile/, a 404).
                safe = getattr(request, params).copy()
                safe["next"] = reverse("admin:index")
                setattr(request, params, safe)
        user = request.user
        if user.is_authenticated and user.is_staff and not user.is_verified():
            query = {"next": request.GET["next"]} if request.GET.get("next") else {}
            return HttpResponseRedirect(reverse("admin:otp") + ("?" + urlencode(query) if query else ""))
        return super().login(request, extra_context)

    def index(self, request, extra_context=None):
        from ops import dashboard

        context = {**(extra_context or {}), **dashboard.dashboard_context(request)}
        return super().index(request, context)

    def get_urls(self):
        from ops import dashboard

        from .otp_views import otp_view, stepup_view

        return [
            path("otp/", otp_view, name="otp"),
            path("step-up/", stepup_view, name="stepup"),
            path("dashboard/<str:chart>.csv", self.admin_view(dashboard.chart_csv), name="dashboard_chart_csv"),
            *super().get_urls(),
        ]
