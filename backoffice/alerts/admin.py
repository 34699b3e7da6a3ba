"""Admin of alerts (acknowledge, audited), their channels (audited configuration) and deliveries."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect

from backoffice.admin_utils import AuditedConfigAdmin, CappedCountPaginator, ReadOnlyAdminMixin

from . import services
from .models import Alert, AlertChannel, AlertDelivery


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    empty_message = "No alert: every check is quiet."
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


@admin.register(AlertChannel)
class AlertChannelAdmin(AuditedConfigAdmin):
    empty_message = ("No alert channel yet: alerts only show here and on the dashboard. Add a Telegram bot, a webhook or "
                     "PagerDuty (the runbook pages P0 and P1 there) so they reach people (runbook §2).")
    list_display = ("name", "kind", "enabled", "min_severity", "target", "consecutive_failures", "open_until",
                    "last_error")
    list_filter = ("kind", "enabled")
    readonly_fields = ("consecutive_failures", "open_until", "last_error")

    @admin.display(description="target")
    def target(self, obj: AlertChannel) -> str:
        if obj.kind == "pagerduty":
            return f"{obj.url or 'PagerDuty events API'} (routing key in ${obj.secret_env})"
        return obj.url or f"chat {obj.chat_id}"


@admin.register(AlertDelivery)
class AlertDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = ("Nothing delivered yet: a delivery appears for each channel when an alert is raised that the channel "
                     "wants.")
    list_display = ("alert", "channel", "status", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("status", "channel")
    list_select_related = ("alert", "channel")
    paginator = CappedCountPaginator  # one row per alert and channel: grows with the alert history
    show_full_result_count = False
