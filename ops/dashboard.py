"""The operations dashboard (admin index): tiles and charts. Filled in by the dashboard issue."""
from __future__ import annotations

from django.http import Http404


def dashboard_context(request) -> dict:
    return {}


def chart_csv(request, chart: str):
    raise Http404(chart)
