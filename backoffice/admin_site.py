"""The back office's admin site: two-factor staff only, and its index is the operations dashboard."""
from __future__ import annotations

import hashlib
import time
from functools import update_wrapper
from urllib.parse import quote

from django.contrib import admin
from django.http import HttpResponseBadRequest, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import translation
from django.utils.http import url_has_allowed_host_and_scheme, urlencode

from .db_router import replica_reads, with_replica_reads
from .permissions import has_role

# The sidebar's order: what staff work in every day first, then the records, then the framework's own apps.
APP_ORDER = ["chain", "disputes", "ops", "alerts", "audit"]


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Escrow operations back office"
    site_title = "Escrow back office"
    index_title = "Operations dashboard"
    index_template = "admin/dashboard.html"

    # The app list (every page's navigation sidebar) depends only on who is asking: their permissions, the
    # language and the script prefix. It is built once per such key and process, not on every page.
    APP_LIST_TTL = 300.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._app_lists: dict[tuple, tuple[float, list]] = {}

    def app_list_key(self, request) -> tuple:
        user = request.user
        perms = "*" if user.is_superuser else ",".join(sorted(user.get_all_permissions()))
        digest = hashlib.blake2b(perms.encode(), digest_size=12).hexdigest()
        return (user.pk, user.is_active, user.is_staff, digest, translation.get_language(),
                request.META.get("SCRIPT_NAME", ""))

    def get_app_list(self, request, app_label=None):
        if app_label is not None:
            return super().get_app_list(request, app_label)
        key, now = self.app_list_key(request), time.monotonic()
        hit = self._app_lists.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        apps = sorted(super().get_app_list(request), key=lambda app: (
            APP_ORDER.index(app["app_label"]) if app["app_label"] in APP_ORDER else len(APP_ORDER), app["name"]))
        if len(self._app_lists) > 1000:
            self._app_lists.clear()
        self._app_lists[key] = (now + self.APP_LIST_TTL, apps)
        return apps

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
        """The dashboard reads from the replica when one is usable (backoffice.db_router): it only shows.

        Staff with no role see none of it (the business state is for the roles), only how to get one."""
        if not has_role(request.user):
            return self._no_role_index(request)
        return with_replica_reads(request, self._dashboard_index, extra_context)

    def _no_role_index(self, request):
        from django.contrib.auth.models import Group
        from django.template.response import TemplateResponse

        roles = list(Group.objects.order_by("name").values_list("name", flat=True))
        return TemplateResponse(request, "admin/no_role.html", {
            **self.each_context(request), "title": "No role yet", "roles": roles})

    def _dashboard_index(self, request, extra_context=None):
        from ops.monitoring import dashboard

        context = {**(extra_context or {}), **dashboard.dashboard_context(request)}
        return super().index(request, context)

    def get_urls(self):
        from ops.monitoring import dashboard

        from .otp_views import otp_view, stepup_view

        return [
            path("otp/", otp_view, name="otp"),
            path("step-up/", stepup_view, name="stepup"),
            path("dashboard/<str:chart>.csv", self.admin_view(replica_reads(dashboard.chart_csv)),
                 name="dashboard_chart_csv"),
            *super().get_urls(),
        ]


_sidebars: dict[tuple, str] = {}


def nav_sidebar_html(request, apps: list) -> str:
    """The sidebar's app list as Django's admin/app_list.html renders it, cached per (its links, the entry the
    current path highlights, the language): every page of one user draws the same sidebar."""
    from django.template.loader import render_to_string

    path_ = quote(request.path)
    links = tuple((app["app_url"], str(app["name"]), tuple((m.get("admin_url"), m.get("add_url"), str(m["name"]))
                                                           for m in app["models"])) for app in apps)
    current = tuple(url for app_url, _name, models in links for url in (app_url, *(m[0] for m in models))
                    if url and url in path_)
    key = (links, current, translation.get_language())
    html = _sidebars.get(key)
    if html is None:
        html = render_to_string("admin/app_list.html", {"app_list": apps, "show_changelinks": False,
                                                        "request": request})
        if len(_sidebars) > 5000:
            _sidebars.clear()
        _sidebars[key] = html
    return html
