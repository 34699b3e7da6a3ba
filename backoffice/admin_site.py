"""The back office's admin site: the index is the operations dashboard (ops.dashboard)."""
from __future__ import annotations

from django.contrib import admin
from django.urls import path


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Escrow operations back office"
    site_title = "Escrow back office"
    index_title = "Operations dashboard"
    index_template = "admin/dashboard.html"

    def index(self, request, extra_context=None):
        from ops import dashboard

        context = {**(extra_context or {}), **dashboard.dashboard_context(request)}
        return super().index(request, context)

    def get_urls(self):
        from ops import dashboard

        return [
            path("dashboard/<str:chart>.csv", self.admin_view(dashboard.chart_csv), name="dashboard_chart_csv"),
            *super().get_urls(),
        ]
