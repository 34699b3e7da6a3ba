"""The Sanctions page (the current lists, each chain's oracle, the screening queue, every list version), a version's
report, the import form, the hits with "mark handled", and the screening on a wallet's profile page."""
from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from backoffice.admin_utils import (
    CappedCountPaginator,
    ReadOnlyAdminMixin,
    admin_page,
    errors_to_form,
    link,
    short_wallet_link,
    utc_minute,
)
from backoffice.security import stepup_required
from chain.admin import UserProfileAdmin
from chain.admin_search import ExactSearchMixin
from chain.models import UserProfile

from .. import services as disputes_services
from ..models import SanctionsHit, SanctionsListVersion
from . import selectors, services

VIEW_PERMISSION = "disputes.view_blacklist"  # every trust-and-safety role sees the blacklist, and so its evidence


class ImportListForm(forms.Form):
    file = forms.FileField(help_text="OFAC's sdn_advanced.xml or sdn.xml, or a derived address list "
                                     "(sanctioned_addresses_ETH.txt: one address a line, or a JSON array).")
    asset = forms.CharField(required=False, max_length=16,
                            help_text="For an address list not named sanctioned_addresses_<ASSET>.txt: the asset "
                                      "its addresses are listed under (ETH, USDT, ...).")
    force = forms.BooleanField(required=False, help_text="Import despite a refusal for shrinking by more than a fifth "
                                                         "or for values that are not addresses (skipped). Audited.")
    force_reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                                   help_text="Required with force: why the refusal is wrong.")


class HandleForm(forms.Form):
    resolution = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                                 help_text="What was done (e.g. 'orders frozen pending legal, reported to compliance')."
                                           " Resolves the hit's review flag; audited.")


@admin.register(SanctionsListVersion)
class SanctionsListVersionAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = ("No sanctions list imported yet: set SANCTIONS_LIST_URL for the daily refresh, or import one "
                     "with the button above (or manage.py import_sanctions_list).")
    list_display = ("version_ref", "list_key", "published", "imported", "entry_count", "changes", "hits",
                    "forced", "imported_by_label", "last_fetched")
    list_filter = ("list_key",)
    list_select_related = ()
    ordering = ("-imported_at", "-id")
    show_full_result_count = False  # a version a day: Django's own count of a small table
    actions = None
    change_list_template = "admin/disputes/sanctionslistversion/change_list.html"

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def has_module_permission(self, request) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def get_urls(self):
        return [path("import/", self.admin_site.admin_view(self.import_view),
                     name="disputes_sanctionslistversion_import"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        state = selectors.screening_state()
        age, stalest = selectors.list_age()
        context = {"oracles": selectors.oracle_checks(), "pending": state.pending,
                   "pending_oldest": state.pending_oldest, "pending_capped": state.pending_capped,
                   "unhandled": state.unhandled_hits,
                   "list_age_hours": None if age is None else age / 3600, "stalest": stalest,
                   "refresh_urls": len(settings.SANCTIONS_LIST_URLS),
                   "can_import": request.user.has_perm("disputes.add_blacklist")}
        return super().changelist_view(request, {**context, **(extra_context or {})})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        """A version's report: what it added and removed, the wallets of ours it named, their orders and who
        handled each. Read-only (versions are never edited)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method != "GET":
            raise PermissionDenied
        version = get_object_or_404(SanctionsListVersion, pk=object_id)
        return admin_page(self, request, "admin/disputes/sanctionslistversion/report.html",
                          title=f"Sanctions list {version.list_key}, version #{version.pk}",
                          report=selectors.version_report(version), original=version)

    @stepup_required
    def import_view(self, request):
        """Upload a list: it is imported at once as a new version (or refused, naming why, with nothing written)."""
        if not request.user.has_perm("disputes.add_blacklist"):
            raise PermissionDenied
        form = ImportListForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                version = services.import_sanctions_list(
                    actor=request.user, data=upload.read(), source=upload.name,
                    asset=form.cleaned_data["asset"] or None, force=form.cleaned_data["force"],
                    force_reason=form.cleaned_data["force_reason"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                self.message_user(request, f"Imported {version.list_key} version #{version.pk}: "
                                           f"{version.entry_count:,} addresses (+{version.added_count:,} "
                                           f"−{version.removed_count:,}); {version.hit_count} of our wallet(s) hit.")
                return HttpResponseRedirect(reverse("admin:disputes_sanctionslistversion_change", args=[version.pk]))
        return admin_page(self, request, "admin/disputes/sanctionslistversion/import.html",
                          title="Import a sanctions list", form=form)

    @admin.display(description="version", ordering="id")
    def version_ref(self, obj: SanctionsListVersion) -> str:
        return link(obj, f"#{obj.pk}")

    @admin.display(description="published (UTC)", ordering="published_at")
    def published(self, obj: SanctionsListVersion) -> str:
        return utc_minute(obj.published_at)

    @admin.display(description="imported (UTC)", ordering="imported_at")
    def imported(self, obj: SanctionsListVersion) -> str:
        return utc_minute(obj.imported_at)

    @admin.display(description="last fetched (UTC)", ordering="last_seen_at")
    def last_fetched(self, obj: SanctionsListVersion) -> str:
        return utc_minute(obj.last_seen_at)

    @admin.display(description="changes")
    def changes(self, obj: SanctionsListVersion) -> str:
        return f"+{obj.added_count:,} −{obj.removed_count:,}"

    @admin.display(description="our wallets hit", ordering="hit_count")
    def hits(self, obj: SanctionsListVersion) -> str:
        if not obj.hit_count:
            return "0"
        url = reverse("admin:disputes_sanctionshit_changelist") + f"?version__id__exact={obj.pk}"
        return format_html('<a href="{}"><strong style="color:#ba2121">{}</strong></a>', url, obj.hit_count)


class HandledFilter(admin.SimpleListFilter):
    title = "handled"
    parameter_name = "handled"

    def lookups(self, request, model_admin):
        return (("no", "Not yet"), ("yes", "Handled"))

    def queryset(self, request, queryset):
        open_ = Q(flag__isnull=True) | Q(flag__resolved_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(open_)
        if self.value() == "yes":
            return queryset.exclude(open_)
        return queryset


@admin.register(SanctionsHit)
class SanctionsHitAdmin(ReadOnlyAdminMixin, ExactSearchMixin, admin.ModelAdmin):
    empty_message = "No wallet of ours has been named by a sanctions list or oracle."
    list_display = ("wallet_link", "source", "evidence_text", "detected", "roles_text", "open_orders", "escrowed_text",
                    "blacklist_link", "handled")
    list_filter = (HandledFilter, "source", "version")
    list_select_related = ("version", "flag__resolved_by", "blacklist")
    search_fields = ("wallet",)
    search_wallet_fields = ("wallet",)
    search_help_text = "Exact wallet (0x…40 hex)."
    ordering = ("-detected_at", "-id")
    paginator = CappedCountPaginator
    show_full_result_count = False
    actions = ["handle_selected"]
    fields = ("wallet_link", "source", "evidence_text", "detected", "roles_text", "blacklist_link", "open_orders",
              "escrowed_text", "orders_table", "handled")
    readonly_fields = fields

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def has_module_permission(self, request) -> bool:
        return request.user.has_perm(VIEW_PERMISSION)

    def has_review_permission(self, request) -> bool:
        return request.user.has_perm("disputes.review_dispute")

    @admin.display(description="wallet")
    def wallet_link(self, obj: SanctionsHit) -> str:
        return short_wallet_link(None, obj.wallet)

    @admin.display(description="evidence")
    def evidence_text(self, obj: SanctionsHit) -> str:
        if obj.version_id:
            return format_html('<a href="{}">{}</a>{}', reverse("admin:disputes_sanctionslistversion_change",
                                                                 args=[obj.version_id]), obj.version,
                               f" (SDN {obj.sdn_uid} {obj.sdn_name})" if obj.sdn_uid else "")
        return f"oracle {obj.oracle} on {obj.chain}, block {obj.block:,}"

    @admin.display(description="detected (UTC)", ordering="detected_at")
    def detected(self, obj: SanctionsHit) -> str:
        return utc_minute(obj.detected_at)

    @admin.display(description="ours as")
    def roles_text(self, obj: SanctionsHit) -> str:
        return ", ".join(obj.roles) or "—"

    @admin.display(description="escrowed in them")
    def escrowed_text(self, obj: SanctionsHit) -> str:
        return ", ".join(f"{amount} {symbol}" for symbol, amount in sorted(obj.escrowed.items())) or "—"

    @admin.display(description="blacklist")
    def blacklist_link(self, obj: SanctionsHit) -> str:
        if obj.blacklist_id is None:
            return "—"
        return link(obj.blacklist, "active" if obj.blacklist.lifted_at is None else "lifted")

    @admin.display(description="handled")
    def handled(self, obj: SanctionsHit) -> str:
        flag = obj.flag
        if flag is None or flag.resolved_at is None:
            return mark_safe('<strong style="color:#ba2121">not yet</strong>')
        return f"{flag.resolved_by or 'system'}, {utc_minute(flag.resolved_at)}: {flag.resolution}"

    @admin.display(description="open orders and disputes when hit")
    def orders_table(self, obj: SanctionsHit) -> str:
        rows = list(obj.orders.all())
        if not rows:
            return "none"
        body = format_html_join("", "<tr><td>{} #{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>", (
            (o.chain, o.onchain_id, o.role, o.status, o.amount.normalize(), o.token_symbol) for o in rows))
        return format_html("<table><tr><th>order</th><th>ours as</th><th>status then</th><th>amount</th></tr>"
                           "{}</table>", body)

    @admin.action(description="Mark selected hits handled…", permissions=["review"])
    def handle_selected(self, request, queryset):
        form = HandleForm(request.POST if "confirm" in request.POST else None)
        hits = list(queryset.select_related("flag"))
        if "confirm" in request.POST and form.is_valid():
            flags = {h.flag_id: h.flag for h in hits if h.flag_id and h.flag.resolved_at is None}
            for flag in flags.values():
                try:
                    disputes_services.resolve_review_flag(actor=request.user, flag=flag,
                                                          resolution=form.cleaned_data["resolution"])
                except ValidationError as exc:
                    self.message_user(request, " ".join(exc.messages), messages.ERROR)
            self.message_user(request, f"Marked {len(flags)} review flag(s) handled.")
            return None
        return admin_page(self, request, "admin/disputes/sanctionshit/handle_confirm.html",
                          title="Mark sanctions hits handled", hits=hits, form=form,
                          selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))


# The wallet's profile page shows its screening beside the mirror's fields. The profile admin belongs to the chain
# mirror, which knows nothing of trust and safety: this registers the same admin again with the screening added.
class ScreenedUserProfileAdmin(UserProfileAdmin):
    fields = (*UserProfileAdmin.fields, "sanctions_screening")
    readonly_fields = (*UserProfileAdmin.readonly_fields, "sanctions_screening")

    @admin.display(description="sanctions screening")
    def sanctions_screening(self, obj: UserProfile) -> str:
        screening = selectors.wallet_screening(obj.wallet)
        hits = selectors.hits_for_wallets([obj.wallet]).get(obj.wallet, [])
        if screening is None or screening.screened_at is None:
            state = "not screened yet (queued)"
        else:
            oracle = (f", the {screening.oracle_chain} oracle at block {screening.oracle_block:,}"
                      if screening.oracle_chain else "")
            state = f"screened {utc_minute(screening.screened_at)} UTC against the lists{oracle}"
        if not hits:
            return f"{state}: not named."
        items = format_html_join("", '<li><a href="{}">{}</a>, {} UTC; {}</li>', (
            (reverse("admin:disputes_sanctionshit_change", args=[h.pk]), h.evidence, utc_minute(h.detected_at),
             "handled" if h.flag and h.flag.resolved_at else "not handled yet") for h in hits))
        return format_html('<strong style="color:#ba2121">SANCTIONS HIT</strong> ({}): <ul>{}</ul>', state, items)


admin.site.unregister(UserProfile)
admin.site.register(UserProfile, ScreenedUserProfileAdmin)
