"""Admin of the audit log: read-only for everyone, superusers included; filter, search and CSV export."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model

from backoffice.admin_utils import CappedCountPaginator, IndexedValuesFilter, ReadOnlyAdminMixin, export_csv_action
from backoffice.db_router import ReplicaChangelistMixin

from .models import AuditLog


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
class AuditLogAdmin(ReplicaChangelistMixin, ReadOnlyAdminMixin, admin.ModelAdmin):
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
