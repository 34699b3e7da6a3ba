"""The one permission check services make before they change anything, and what a role is."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied


def require_perm(actor: Any, perm: str, what: str, *, allow_system: bool = True) -> None:
    """Raise PermissionDenied unless `actor` is active staff holding `perm`.

    A system actor (None, or a "system:<task>" label) passes when `allow_system`: rule-bound
    automation runs without a person, and its audit rows say so.
    """
    if actor is None or isinstance(actor, str):
        if allow_system:
            return
        raise PermissionDenied(f"{actor or 'the system'} may not {what}: a staff member must.")
    if not actor.is_active or not actor.is_staff or not actor.has_perm(perm):
        raise PermissionDenied(f"{actor.get_username()} may not {what}.")


def has_role(user: Any) -> bool:
    """A role is a group with permissions (ops/migrations/0008_roles.py); a staff account given none, by group or
    directly, holds no permission at all, and may see no business state (the dashboard, /metrics)."""
    return user.is_superuser or bool(user.get_all_permissions())
