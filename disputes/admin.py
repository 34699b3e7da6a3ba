"""Admin for the blacklist: adding and lifting go through the audited services."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.template.response import TemplateResponse

from backoffice.admin_utils import CappedCountPaginator, export_csv_action, link
from chain.admin import ExactSearchMixin
from chain.models import UserProfile

from . import services
from .forms import BlacklistAddForm, LiftForm
from .models import Blacklist


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return (("active", "Active"), ("lifted", "Lifted"))

    def queryset(self, request, queryset):
        if self.value() == "active":
            return queryset.filter(lifted_at__isnull=True)
        if self.value() == "lifted":
            return queryset.filter(lifted_at__isnull=False)
        return queryset


@admin.register(Blacklist)
class BlacklistAdmin(ExactSearchMixin, admin.ModelAdmin):
    list_display = ("wallet", "state", "source", "reason_short", "created_at", "created_by", "expires_at",
                    "order_link", "profile_link", "lifted_at")
    list_filter = (ActiveFilter, "source", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("created_by", "order")
    search_fields = ("wallet",)
    search_wallet_fields = ("wallet",)
    search_text_fields = ("reason",)
    search_help_text = "Exact wallet (0x…40 hex) or the start of a reason."
    ordering = ("-created_at",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    raw_id_fields = ("order",)
    actions = ["lift_selected", export_csv_action(
        ["wallet", "reason", "source", "created_at", "expires_at", "order_id", "lifted_at", "lift_reason"],
        "blacklist.csv")]

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = BlacklistAddForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return [f.name for f in Blacklist._meta.fields]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # history is kept: lift instead

    def has_change_permission(self, request, obj=None) -> bool:
        # Entries are never edited (only lifted, through the action): the change page is read-only.
        return super().has_change_permission(request, obj) if obj is None else False

    def save_model(self, request, obj, form, change):
        if change:
            return
        entry = services.blacklist_wallet(
            actor=request.user, wallet=form.cleaned_data["wallet"], reason=form.cleaned_data["reason"],
            source=form.cleaned_data["source"], expires_at=form.cleaned_data.get("expires_at"),
            order=form.cleaned_data.get("order"))
        obj.pk = entry.pk

    @admin.display(description="state")
    def state(self, obj: Blacklist) -> str:
        return "active" if obj.lifted_at is None else "lifted"

    @admin.display(description="reason")
    def reason_short(self, obj: Blacklist) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:60] + "…"

    @admin.display(description="order")
    def order_link(self, obj: Blacklist) -> str:
        return link(obj.order) if obj.order_id else "—"

    @admin.display(description="profile")
    def profile_link(self, obj: Blacklist) -> str:
        profile = UserProfile.objects.filter(wallet=obj.wallet).first()
        return link(profile, "profile") if profile else "—"

    @admin.action(description="Lift selected blacklistings…", permissions=["change"])
    def lift_selected(self, request, queryset):
        active = queryset.filter(lifted_at__isnull=True)
        form = LiftForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            lifted = 0
            for entry in active:
                try:
                    services.lift_blacklist_entry(actor=request.user, entry=entry, reason=form.cleaned_data["reason"])
                    lifted += 1
                except ValidationError as exc:
                    self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            self.message_user(request, f"Lifted {lifted} blacklisting(s).", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/disputes/lift_confirm.html", {
            **self.admin_site.each_context(request),
            "title": "Lift blacklistings",
            "entries": active,
            "form": form,
            "opts": self.model._meta,
            "action": "lift_selected",
            "selected": request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME),
        })
