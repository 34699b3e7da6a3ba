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

# Each room registers its own admins: owner actions and signing keys, the console (reports, flags, secrets,
# incidents, database activity), backups, and monitoring's audited beat schedule (in place of
# django-celery-beat's own admins, which this app, listed after it, replaces).
from .actions import admin as actions_admin  # noqa: E402,F401
from .actions import admin_autopause, admin_keys  # noqa: E402,F401
from .backups import admin as backups_admin  # noqa: E402,F401
from .console import admin as console_admin  # noqa: E402,F401
from .monitoring import admin as monitoring_admin  # noqa: E402,F401
from .monitoring import admin_schedules  # noqa: E402,F401
