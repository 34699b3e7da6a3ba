"""Admin for operations records (the audit log's and the alerts' admins live with their apps in backoffice/)."""
from __future__ import annotations

from axes import admin as axes_admin
from axes.models import AccessAttempt
from django.contrib import admin
from django.utils import timezone


class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    """django-axes' own admin. Its "clean up expired attempts" action (axes 8.3.1) reads
    request.axes_attempt_time, which axes sets only on sign-in requests: without it the action answers 500."""

    @admin.action(description=axes_admin.AccessAttemptAdmin.cleanup_expired_attempts.short_description)
    def cleanup_expired_attempts(self, request, queryset):
        request.axes_attempt_time = timezone.now()
        return super().cleanup_expired_attempts(request, queryset)


admin.site.unregister(AccessAttempt)
admin.site.register(AccessAttempt, AccessAttemptAdmin)

# Contract actions (confirmation pages, status, kill switch), the operations console (reports, flags, secrets,
# incidents), custody (signing keys) and backups each have an admin module of their own.
from . import (  # noqa: E402
    admin_actions,  # noqa: F401
    admin_backups,  # noqa: F401
    admin_console,  # noqa: F401
    admin_custody,  # noqa: F401
)
