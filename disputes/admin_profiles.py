"""The user-profile link beside a wallet's row, for the blacklist and the review flags admins."""
from __future__ import annotations

from django.db.models import OuterRef, Subquery

from backoffice.admin_utils import link
from chain.models import UserProfile


def with_profile_pk(queryset):
    """Each row's user profile id in the same query (a unique-index probe per row), not one query per row."""
    return queryset.annotate(
        profile_pk=Subquery(UserProfile.objects.filter(wallet=OuterRef("wallet")).values("pk")[:1]))


def profile_link(obj) -> str:
    pk = getattr(obj, "profile_pk", None)
    return link(UserProfile(pk=pk), "profile") if pk is not None else "—"
