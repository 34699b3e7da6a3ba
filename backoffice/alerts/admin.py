"""Admin of alerts (acknowledge, audited), their channels (audited configuration) and deliveries."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect

from backoffice.admin_utils import AuditedConfigAdmin, CappedCountPaginator, ReadOnlyAdminMixin

from . import services
from .models import Alert, AlertChannel, AlertDelivery, Verdict
from .selectors import PRECISION_DAYS, precision_by_rule


class StateFilter(admin.SimpleListFilter):
    """Firing (the condition holds now) or resolved (its check saw it clear), apart from acknowledged."""
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("firing", "Firing"), ("resolved_unacknowledged", "Resolved, not acknowledged"),
                ("resolved", "Resolved"), ("flapping", "Flapping"), ("inhibited", "Inhibited")]

    def queryset(self, request, queryset):
        return {"firing": lambda: queryset.firing(),
                "resolved_unacknowledged": lambda: queryset.resolved().unacknowledged(),
                "resolved": lambda: queryset.resolved(), "flapping": lambda: queryset.filter(flapping=True),
                "inhibited": lambda: queryset.exclude(inhibited="")}.get(self.value(), lambda: queryset)()


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    empty_message = "No alert: every check is quiet."
    list_display = ("severity", "title", "state_text", "source", "occurrences", "created_at", "last_seen_at",
                    "resolved_at", "acknowledged_at", "acknowledged_by", "verdict")
    list_filter = (StateFilter, "severity", "source", "verdict", ("acknowledged_at", admin.EmptyFieldListFilter))
    list_select_related = ("acknowledged_by",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    search_fields = ("^key", "title")  # ^: a rule name (the key's first part) finds all its alerts
    readonly_fields = [f.name for f in Alert._meta.fields]
    actions = ["acknowledge_true", "acknowledge_false", "acknowledge_test"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="state")
    def state_text(self, obj: Alert) -> str:
        text = obj.state + (" (flapping)" if obj.flapping else "")
        return f"{text}, inhibited: {obj.inhibited}" if obj.inhibited else text

    def changelist_view(self, request, extra_context=None):
        """The list, and over it each rule's record over 30 days: how far its pages can be trusted."""
        return super().changelist_view(request, {**(extra_context or {}), "precision": precision_by_rule(),
                                                 "precision_days": PRECISION_DAYS})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """Every field is read-only: the page acknowledges with a verdict (audited) instead of saving nothing."""
        alert = self.get_object(request, object_id) if request.method == "POST" else None
        if alert is None:  # a GET, or an alert that does not exist: Django's page (and its 404 redirect)
            return super().change_view(request, object_id, form_url, extra_context)
        if not self.has_change_permission(request, alert):
            raise PermissionDenied
        verdict = request.POST.get("_acknowledge", "")
        if verdict and alert.acknowledged_at is None:
            try:
                services.acknowledge_alert(actor=request.user, alert=alert, verdict=verdict)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
                return HttpResponseRedirect(request.path)
            self.message_user(request, f"Acknowledged as {Verdict(verdict).label.lower()}: {alert.title}.")
            return self.response_post_save_change(request, alert)
        self.message_user(request, "Nothing to save: an alert's fields are read-only; acknowledge it instead.",
                          messages.WARNING)
        return HttpResponseRedirect(request.path)

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        context["can_acknowledge"] = (obj is not None and obj.acknowledged_at is None
                                      and self.has_change_permission(request, obj))
        context["verdicts"] = Verdict.choices
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _acknowledge(self, request, queryset, verdict: str) -> None:
        done = 0
        for alert in queryset.filter(acknowledged_at__isnull=True):
            services.acknowledge_alert(actor=request.user, alert=alert, verdict=verdict)
            done += 1
        self.message_user(request, f"Acknowledged {done} as {Verdict(verdict).label.lower()}.")

    @admin.action(description="Acknowledge selected alerts: true alarm", permissions=["change"])
    def acknowledge_true(self, request, queryset):
        self._acknowledge(request, queryset, Verdict.TRUE)

    @admin.action(description="Acknowledge selected alerts: false alarm", permissions=["change"])
    def acknowledge_false(self, request, queryset):
        self._acknowledge(request, queryset, Verdict.FALSE)

    @admin.action(description="Acknowledge selected alerts: test or drill", permissions=["change"])
    def acknowledge_test(self, request, queryset):
        self._acknowledge(request, queryset, Verdict.TEST)


@admin.register(AlertChannel)
class AlertChannelAdmin(AuditedConfigAdmin):
    empty_message = ("No alert channel yet: alerts only show here and on the dashboard. Add a Telegram bot, a webhook "
                     "or "
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
    empty_message = ("Nothing delivered yet: a delivery appears for each channel when an alert is raised that the "
                     "channel "
                     "wants.")
    list_display = ("alert", "channel", "event", "status", "attempts", "created_at", "sent_at", "last_error")
    list_filter = ("status", "event", "channel")
    list_select_related = ("alert", "channel")
    paginator = CappedCountPaginator  # one row per alert and channel: grows with the alert history
    show_full_result_count = False
