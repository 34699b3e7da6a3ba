"""The dispute queue, the review page of one dispute, the RB-04 reports and arbitrator monitoring."""
from __future__ import annotations

from datetime import timedelta

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from backoffice.admin_utils import (
    CappedCountPaginator,
    ReadOnlyMirrorAdmin,
    a_tag,
    admin_page,
    admin_url,
    csv_response,
    ipfs_links,
    short_hex,
    short_wallet_link,
    utc_minute,
)
from backoffice.security import stepup_required
from chain.admin import OrderColumns
from chain.admin_search import ExactSearchMixin
from chain.models import Arbitrator, Order

from . import selectors, services
from .admin_profiles import profile_link, with_profile_pk
from .models import DisputedOrder, Recommendation, ReviewFlag
from .sanctions import selectors as sanctions


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request, model_admin):
        sla = settings.DISPUTE_SLA_HOURS
        return (("within", f"within SLA (< {sla} h)"), ("over", f"over SLA (≥ {sla} h)"), ("3d", "older than 3 days"))

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "within":
            return queryset.filter(disputed_at__gt=now - timedelta(hours=settings.DISPUTE_SLA_HOURS))
        if self.value() == "over":
            return queryset.filter(disputed_at__lte=now - timedelta(hours=settings.DISPUTE_SLA_HOURS))
        if self.value() == "3d":
            return queryset.filter(disputed_at__lte=now - timedelta(days=3))
        return queryset


class AmountFilter(admin.SimpleListFilter):
    title = "amount"
    parameter_name = "amount"
    BANDS = {"lt100": (None, 100), "100-1000": (100, 1000), "1000-5000": (1000, 5000), "gt5000": (5000, None)}

    def lookups(self, request, model_admin):
        return (("lt100", "< 100"), ("100-1000", "100 – 1,000"), ("1000-5000", "1,000 – 5,000"),
                ("gt5000", "> 5,000 (large order)"))

    def queryset(self, request, queryset):
        band = self.BANDS.get(self.value())
        if band is None:
            return queryset
        low, high = band
        if low is not None:
            queryset = queryset.filter(amount__gte=low)
        if high is not None:
            queryset = queryset.filter(amount__lt=high)
        return queryset


class AssigneeFilter(admin.SimpleListFilter):
    title = "assignee"
    parameter_name = "assignee"

    def lookups(self, request, model_admin):
        return (("me", "Mine"), ("none", "Unassigned"), ("any", "Claimed by anyone"))

    def queryset(self, request, queryset):
        if self.value() == "me":
            return queryset.filter(dispute_case__assignee=request.user)
        if self.value() == "none":
            return queryset.filter(Q(dispute_case__isnull=True) | Q(dispute_case__assignee__isnull=True))
        if self.value() == "any":
            return queryset.filter(dispute_case__assignee__isnull=False)
        return queryset


class ArbitratorFilter(admin.SimpleListFilter):
    title = "arbitrator"
    parameter_name = "arbitrator"

    def lookups(self, request, model_admin):
        arbs = Arbitrator.objects.filter(is_active=True).order_by("chain", "-reputation").values_list("chain", "wallet")
        return [(wallet, f"{short_hex(wallet)} ({chain})") for chain, wallet in arbs[:100]]

    def queryset(self, request, queryset):
        return queryset.filter(arbitrator_wallet=self.value().lower()) if self.value() else queryset


class NoteForm(forms.Form):
    body = forms.CharField(label="note", widget=forms.Textarea(attrs={"rows": 3}), max_length=5000)


class RecommendForm(forms.Form):
    recommendation = forms.ChoiceField(choices=Recommendation.choices)
    note = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                           help_text="Why: the evidence that decides it.")


class ResolveForm(forms.Form):
    favor = forms.ChoiceField(choices=(("buyer", "Resolve for the buyer (refund)"),
                                       ("seller", "Resolve for the seller")))
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


class BlacklistSelectedForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Required; applies to every selected wallet and is audited.")


@admin.register(DisputedOrder)
class DisputeQueueAdmin(OrderColumns, ExactSearchMixin, ReadOnlyMirrorAdmin):
    empty_message = "No open dispute: the queue is clear."
    list_display = ("order_ref", "chain_name", "age", "amount_with_token", "buyer_link", "seller_link",
                    "arbitrator_short", "assignee", "deadline", "evidence")
    list_filter = ("chain", AgeFilter, AmountFilter, ArbitratorFilter, AssigneeFilter)
    list_select_related = ("dispute_case__assignee",)  # parties link by wallet: no join to their profiles
    list_display_links = None  # the order column links to the review page itself
    ordering = ("disputed_at", "id")  # oldest first
    sortable_by = ("age", "amount_with_token", "chain_name", "deadline")
    actions = None
    # The queue is where reviewers pick up work: a dispute opened a moment ago must be in it, so it reads the primary.
    replica_changelist = False

    def get_queryset(self, request):
        return super().get_queryset(request).filter(status="disputed")

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("chain.view_order")

    def has_module_permission(self, request) -> bool:
        return request.user.has_perm("chain.view_order")

    @admin.display(description="order", ordering="onchain_id")
    def order_ref(self, obj):
        return a_tag(admin_url(obj, "review"), f"#{obj.onchain_id}")

    @admin.display(description="arbitrator deadline (UTC)", ordering="dispute_deadline")
    def deadline(self, obj):
        return utc_minute(obj.dispute_deadline)

    @admin.display(description="age", ordering="disputed_at")
    def age(self, obj):
        if obj.disputed_at is None:
            return "—"
        text, over_sla = selectors.dispute_age(obj.disputed_at)
        if over_sla:
            return mark_safe(f'<strong style="color:#ba2121" title="over the {settings.DISPUTE_SLA_HOURS:g} h SLA">'
                             f"{text}</strong>")
        return text

    @admin.display(description="buyer")
    def buyer_link(self, obj):
        return short_wallet_link(None, obj.buyer_id)

    @admin.display(description="seller")
    def seller_link(self, obj):
        return short_wallet_link(None, obj.seller_id)

    @admin.display(description="assignee")
    def assignee(self, obj):
        case = getattr(obj, "dispute_case", None)
        return case.assignee if case and case.assignee_id else "—"

    @admin.display(description="evidence")
    def evidence(self, obj):
        return ipfs_links(obj.evidence_cids, shorten=True)

    # ------------------------------------------------------------------ extra pages
    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:pk>/review/", wrap(self.review_view), name="disputes_disputedorder_review"),
            path("rb04/", wrap(self.rb04_view), name="disputes_disputedorder_rb04"),
            path("arbitrators/", wrap(self.arbitrators_view), name="disputes_disputedorder_arbitrators"),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return HttpResponseRedirect(reverse("admin:disputes_disputedorder_review", args=[object_id]))

    def review_view(self, request, pk: int):
        if not request.user.has_perm("chain.view_order"):
            raise PermissionDenied
        order = get_object_or_404(Order.objects.select_related("buyer", "seller"), pk=pk)
        can_review = request.user.has_perm("disputes.review_dispute")
        can_propose = request.user.has_perm("ops.add_contractaction")
        forms_ = {"note": NoteForm(), "recommend": RecommendForm(), "resolve": ResolveForm()}
        if request.method == "POST":
            op = request.POST.get("op")
            try:
                if op in ("claim", "release", "note", "recommend") and not can_review:
                    raise PermissionDenied
                if op == "claim":
                    services.claim_dispute(actor=request.user, order=order)
                    self.message_user(request, "You hold this dispute now.")
                elif op == "release":
                    services.release_dispute(actor=request.user, order=order)
                    self.message_user(request, "Released.")
                elif op == "note":
                    forms_["note"] = form = NoteForm(request.POST)
                    if form.is_valid():
                        services.add_dispute_note(actor=request.user, order=order, body=form.cleaned_data["body"])
                        self.message_user(request, "Note added.")
                    else:
                        raise _Invalid
                elif op == "recommend":
                    forms_["recommend"] = form = RecommendForm(request.POST)
                    if form.is_valid():
                        services.recommend_resolution(actor=request.user, order=order, **form.cleaned_data)
                        self.message_user(request, "Recommendation recorded.")
                    else:
                        raise _Invalid
                elif op == "resolve":
                    if not can_propose:
                        raise PermissionDenied
                    forms_["resolve"] = form = ResolveForm(request.POST)
                    if form.is_valid():
                        action = services.propose_owner_resolution(
                            actor=request.user, order=order, favor_buyer=form.cleaned_data["favor"] == "buyer",
                            reason=form.cleaned_data["reason"])
                        self.message_user(request, format_html(
                            'Proposed contract action <a href="{}">#{}</a>: {}. A different person must approve it.',
                            reverse("admin:ops_contractaction_change", args=[action.pk]), action.pk,
                            action.description))
                    else:
                        raise _Invalid
                return HttpResponseRedirect(request.path)
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.ERROR)
            except _Invalid:
                self.message_user(request, "Please correct the form below.", messages.ERROR)
        case = getattr(order, "dispute_case", None)
        arbitrator = Arbitrator.objects.filter(chain=order.chain, wallet=order.arbitrator_wallet).first() \
            if order.arbitrator_wallet else None
        now = timezone.now()
        return admin_page(
            self, request, "admin/disputes/review.html", title=f"Dispute review — {order}",
            order=order, case=case, notes=list(case.notes.select_related("author")) if case else [],
            timeline=selectors.order_timeline(order),
            buyer=selectors.party_history(order.buyer_id), seller=selectors.party_history(order.seller_id),
            arbitrator=arbitrator,
            arbitrator_record=(selectors.arbitrator_record(order.chain, order.arbitrator_wallet)
                               if order.arbitrator_wallet else None),
            evidence=ipfs_links(order.evidence_cids, shorten=True),
            sla_hours=settings.DISPUTE_SLA_HOURS,
            over_sla=(order.disputed_at is not None
                      and now - order.disputed_at >= timedelta(hours=settings.DISPUTE_SLA_HOURS)),
            deadline_passed=order.dispute_deadline is not None and order.dispute_deadline <= now,
            can_review=can_review, can_propose=can_propose, forms=forms_,
            sanctions_hits=_party_hits(order),
        )

    @stepup_required(methods=('POST',))
    def rb04_view(self, request):
        if not request.user.has_perm("chain.view_order"):
            raise PermissionDenied
        form = BlacklistSelectedForm(request.POST or None)
        if request.method == "POST":
            if not request.user.has_perm("disputes.add_blacklist"):
                raise PermissionDenied
            wallets = request.POST.getlist("wallet")
            if not wallets:
                self.message_user(request, "Select at least one wallet to blacklist.", messages.ERROR)
            elif form.is_valid():
                try:
                    done = services.blacklist_wallets(actor=request.user, wallets=wallets,
                                                      reason=form.cleaned_data["reason"])
                except ValidationError as exc:
                    self.message_user(request, "Nothing was blacklisted: " + " ".join(exc.messages), messages.ERROR)
                else:
                    self.message_user(request, f"Blacklisted {len(done)} wallet(s).")
                    return HttpResponseRedirect(request.path)
        tables = {  # the report's wallet lists, each exportable
            "sellers": lambda: selectors.repeat_offenders("seller"),
            "buyers": lambda: selectors.repeat_offenders("buyer"),
            "new_accounts": selectors.new_accounts_high_dispute_rate,
        }
        if request.GET.get("export"):  # one section as CSV: only its report runs
            section = request.GET["export"]
            rows = tables[section]() if section in tables else []
            return _dicts_csv(f"rb04_{section}.csv", rows, empty_header="wallet")
        return admin_page(self, request, "admin/disputes/rb04.html", title="RB-04: high dispute rate report",
                          form=form, can_blacklist=request.user.has_perm("disputes.add_blacklist"),
                          rate=selectors.dispute_rate_24h(services.dispute_rate_threshold()),
                          **{name: build() for name, build in tables.items()})

    def arbitrators_view(self, request):
        if not request.user.has_perm("chain.view_arbitrator"):
            raise PermissionDenied
        stats = selectors.arbitrator_stats_30d()
        if request.GET.get("export"):
            return _dicts_csv("arbitrator_stats_30d.csv", stats, empty_header="arbitrator_wallet")
        sanctioned = sanctions.sanctioned_arbitrator_wallets()
        return admin_page(self, request, "admin/disputes/arbitrators.html", title="Arbitrator pool monitoring",
                          active=Arbitrator.objects.active().order_by("-reputation"),
                          at_risk=Arbitrator.objects.at_risk().order_by("reputation"), stats=stats,
                          sanctioned=sanctioned,
                          sanctioned_arbitrators=Arbitrator.objects.filter(wallet__in=sanctioned).order_by("chain"))


class _Invalid(Exception):
    pass


def _party_hits(order: Order) -> list[tuple[str, str, list]]:
    """(role, wallet, hits) for each party of the order a sanctions list or oracle named."""
    parties = (("buyer", order.buyer_id), ("seller", order.seller_id), ("arbitrator", order.arbitrator_wallet))
    hits = sanctions.hits_for_wallets([wallet for _, wallet in parties])
    return [(role, wallet, hits[wallet]) for role, wallet in parties if wallet in hits]


def _dicts_csv(filename: str, rows: list[dict], *, empty_header: str):
    """A report's rows (dicts of one shape) as a CSV download; its columns are the dicts' keys."""
    header = list(rows[0]) if rows else [empty_header]
    return csv_response(filename, header, ([row[h] for h in header] for row in rows))


@admin.register(ReviewFlag)
class ReviewFlagAdmin(ExactSearchMixin, admin.ModelAdmin):
    empty_message = "No repeat offender flagged: the hourly check flags wallets with repeated disputes for review here."
    list_display = ("wallet", "role", "disputes", "reason", "created_at", "resolved_at", "resolved_by", "profile")
    list_filter = ("role", ("resolved_at", admin.EmptyFieldListFilter))
    list_select_related = ("resolved_by",)
    paginator = CappedCountPaginator
    show_full_result_count = False
    search_fields = ("wallet",)
    search_wallet_fields = ("wallet",)
    readonly_fields = [f.name for f in ReviewFlag._meta.fields]
    actions = ["resolve_selected"]

    def get_queryset(self, request):
        return with_profile_pk(super().get_queryset(request))

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("disputes.review_dispute") if obj is None else False

    @admin.display(description="profile")
    def profile(self, obj):
        return profile_link(obj)

    @admin.action(description="Mark selected as reviewed…", permissions=["change"])
    def resolve_selected(self, request, queryset):
        form = BlacklistSelectedForm(request.POST if "confirm" in request.POST else None)
        form.fields["reason"].label = "resolution"
        if "confirm" in request.POST and form.is_valid():
            for flag in queryset.filter(resolved_at__isnull=True):
                services.resolve_review_flag(actor=request.user, flag=flag, resolution=form.cleaned_data["reason"])
            self.message_user(request, "Marked as reviewed.")
            return None
        return admin_page(self, request, "admin/disputes/flag_resolve.html", title="Resolve review flags",
                          flags=queryset, form=form, selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))

