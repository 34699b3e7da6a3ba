"""Admin for operations records. The audit log is read-only for everyone, superusers included."""
from __future__ import annotations

from axes import admin as axes_admin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.utils import timezone

from backoffice.admin_utils import CappedCountPaginator, IndexedValuesFilter, ReadOnlyAdminMixin, export_csv_action

from . import services
from .models import Alert, AuditLog


class ActorFilter(admin.SimpleListFilter):
    """Who acted: a staff member, the automation, or anonymous sign-in attempts (audit_log_actor_idx)."""

    title = "actor"
    parameter_name = "actor"

    def lookups(self, request, model_admin):
        staff = get_user_model().objects.filter(is_staff=True).order_by("username").values_list("username", flat=True)
        return [("system:", "automation (system)"), ("anonymous:", "sign-in attempts (anonymous)"),
                *((name, name) for name in staff[:200])]

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        if value in ("system:", "anonymous:"):
            return queryset.filter(actor_label__startswith=value.rstrip(":"))
        return queryset.filter(actor_label=value)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "created_at", "actor_label", "as_superuser", "action", "object_type", "object_id",
                    "object_repr", "reason_short")
    # The log is never pruned: the action and object-type choices come from their indexes, not a DISTINCT scan.
    list_filter = (ActorFilter, ("action", IndexedValuesFilter), ("object_type", IndexedValuesFilter), "as_superuser",
                   ("created_at", admin.DateFieldListFilter))
    list_select_related = ()  # the actor is shown by its label: no join
    search_fields = ("=actor_label", "=object_id", "=action")
    search_help_text = "Exact actor, object id or action."
    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = [export_csv_action(["id", "created_at", "actor_label", "action", "object_type", "object_id",
                                  "object_repr", "before", "after", "reason", "prev_hash", "row_hash"],
                                 "audit_log.csv")]

    @admin.display(description="reason")
    def reason_short(self, obj: AuditLog) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:60] + "…"


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ("severity", "title", "source", "occurrences", "created_at", "last_seen_at", "acknowledged_at",
                    "acknowledged_by")
    list_filter = ("severity", "source", ("acknowledged_at", admin.EmptyFieldListFilter))
    list_select_related = ("acknowledged_by",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    search_fields = ("=key", "title")
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ["acknowledge"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Every field is read-only: the page acknowledges (audited) instead of saving nothing."""
        alert = self.get_object(request, object_id) if request.method == "POST" else None
        if alert is None:  # a GET, or an alert that does not exist: Django's page (and its 404 redirect)
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_change_permission(request, alert):
            raise PermissionDenied
        if "_acknowledge" in request.POST and alert.acknowledged_at is None:
            services.acknowledge_alert(actor=request.user, alert=alert)
            self.message_user(request, f"Acknowledged: {alert.title}.")
            return self.response_post_save_change(request, alert)
        self.message_user(request, "Nothing to save: an alert's fields are read-only; acknowledge it instead.",
                          messages.WARNING)
        return HttpResponseRedirect(request.path)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_acknowledge"] = (obj is not None and obj.acknowledged_at is None
                                      and self.has_change_permission(request, obj))
        return super().render_change_form(request, context, add, change, form_url, obj)

    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request, queryset):
        for alert in queryset.filter(acknowledged_at__isnull=True):
            services.acknowledge_alert(actor=request.user, alert=alert)
        self.message_user(request, "Acknowledged.")

class AccessAttemptAdmin(axes_admin.AccessAttemptAdmin):
    """django-axes' own admin. Its "clean up expired attempts" action (axes 8.3.1) reads
    request.axes_attempt_time, which axes sets only on sign-in requests: without it the action answers 500."""

    @admin.action(description=axes_admin.AccessAttemptAdmin.cleanup_expired_attempts.short_description)
    def cleanup_expired_attempts(self, request, queryset):
        request.axes_attempt_time = timezone.now()
        return super().cleanup_expired_attempts(request, queryset)


admin.site.unregister(AccessAttempt)
admin.site.register(AccessAttempt, AccessAttemptAdmin)

# Contract actions have an admin of their own (confirmation pages, status, kill switch).
from . import admin_actions  # noqa: E402,F401

# The operations console (channels, reports, flags, secrets, incidents).
from . import admin_console  # noqa: E402,F401
from . import admin_custody  # noqa: E402,F401
from . import admin_backups  # noqa: E402,F401
