"""Admin for the blacklist: adding and lifting go through the audited services."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path, reverse

from backoffice.admin_utils import CappedCountPaginator, admin_page, export_csv_action, link
from backoffice.security import stepup_required
from chain.admin_search import ExactSearchMixin

from . import (
    admin_review,  # noqa: F401 - registers the dispute queue, review page, RB-04 reports, arbitrators
    services,
)
from .admin_profiles import profile_link, with_profile_pk
from .forms import BlacklistAddForm, LiftForm
from .imports import MAX_BYTES, parse_blacklist_csv
from .models import Blacklist
from .sanctions import admin as sanctions_admin  # noqa: F401 - the Sanctions page, hits, the profile's screening


class ImportForm(forms.Form):
    file = forms.FileField(help_text="CSV with a header: wallet,reason,source[,expires_at]. Up to 10,000 rows.")


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
    empty_message = "No wallet is blacklisted. Add one above, import a CSV, or blacklist from the RB-04 report."
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

    change_list_template = "admin/disputes/blacklist/change_list.html"

    def get_queryset(self, request):
        return with_profile_pk(super().get_queryset(request))

    def get_urls(self):
        return [path("import/", self.admin_site.admin_view(self.import_view), name="disputes_blacklist_import"),
                *super().get_urls()]

    @stepup_required
    def import_view(self, request):
        """Upload → preview (every row, or every error with its line) → confirm → import all or nothing."""
        if not request.user.has_perm("disputes.add_blacklist"):
            raise PermissionDenied
        context = {"title": "Import blacklist CSV", "form": ImportForm()}
        if request.method == "POST" and "payload" in request.POST:
            try:
                data = signing.loads(request.POST["payload"], salt="blacklist-import", max_age=3600)
                done = services.import_blacklist(actor=request.user, data=data)
            except signing.BadSignature:
                self.message_user(request, "The preview expired or was altered: upload the file again.", messages.ERROR)
            except ValidationError as exc:
                self.message_user(request, "Nothing was imported: " + " ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(request, f"Imported {len(done)} blacklist entries.")
                return HttpResponseRedirect(reverse("admin:disputes_blacklist_changelist"))
        elif request.method == "POST":
            form = ImportForm(request.POST, request.FILES)
            context["form"] = form
            if form.is_valid():
                raw = form.cleaned_data["file"].read(MAX_BYTES + 1)
                parsed = parse_blacklist_csv(raw)
                context.update(parsed=parsed)
                if parsed.ok:
                    context["payload"] = signing.dumps(raw.decode("utf-8-sig"), salt="blacklist-import", compress=True)
        return admin_page(self, request, "admin/disputes/blacklist/import.html", **context)

    @stepup_required
    def add_view(self, request, form_url="", extra_context=None):
        return super().add_view(request, form_url, extra_context)

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
        return profile_link(obj)

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
        return admin_page(self, request, "admin/disputes/lift_confirm.html", title="Lift blacklistings", entries=active,
                          form=form, action="lift_selected",
                          selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))
