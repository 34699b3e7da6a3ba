"""The admin navigation sidebar, rendered once per permissions and highlighted entry (see admin_site)."""
from __future__ import annotations

from django import template

from backoffice.admin_site import nav_sidebar_html

register = template.Library()


@register.simple_tag(takes_context=True)
def cached_app_list(context):
    return nav_sidebar_html(context["request"], context.get("available_apps") or [])
