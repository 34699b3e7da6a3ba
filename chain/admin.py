"""Admin for the chain mirror: read-only, linked, and searchable exactly by wallet, order id and tx hash."""
from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from backoffice.admin_utils import (
    ADDRESS_RE,
    ReadOnlyMirrorAdmin,
    a_tag,
    changelist_link,
    copy_attrs,
    export_csv_action,
    hex_cell,
    ipfs_links,
    link,
    short_wallet_link,
    utc_minute,
)

from . import admin_sync  # noqa: F401 - registers the sync's own records (cursors, raw events, providers, drift)
from .admin_search import ExactSearchMixin
from .models import Arbitrator, DailyOrderStats, Order, OrderStatus, UserProfile


class TokenSymbolFilter(admin.SimpleListFilter):
    """The token symbols from the daily rollup (a few hundred rows), not SELECT DISTINCT over every order."""

    title = "token symbol"
    parameter_name = "token_symbol"

    def lookups(self, request, model_admin):
        symbols = DailyOrderStats.objects.order_by("token_symbol").values_list("token_symbol", flat=True).distinct()
        return [(s, s) for s in symbols if s]

    def queryset(self, request, queryset):
        return queryset.filter(token_symbol=self.value()) if self.value() else queryset


class OrderColumns:
    """What every list of orders shows and searches the same way: the orders changelist and the dispute queue.
    Plain lookups: the changelist's generic cell rendering (choices, dates) is most of a page's time."""

    search_fields = ("onchain_id",)  # enables the search box; the lookup itself is exact_search
    search_wallet_fields = ("buyer_id", "seller_id", "arbitrator_wallet")
    search_hash_fields = ("created_tx_hash", "last_tx_hash")
    search_id_fields = ("onchain_id",)

    @admin.display(description="chain", ordering="chain")
    def chain_name(self, obj: Order) -> str:
        # Lists show the short forms staff use in the runbook ("BSC"), any other chain its configured name (filters
        # and detail pages show the long names: chain_choices); a chain no longer in CHAINS, its stored value.
        spec = settings.CHAINS.get(obj.chain)
        return spec["label"] if spec else obj.chain

    @admin.display(description="amount", ordering="amount")
    def amount_with_token(self, obj: Order) -> str:
        return f"{obj.amount.normalize():f} {obj.token_symbol}"

    @admin.display(description="arbitrator")
    def arbitrator_short(self, obj: Order) -> str:
        return hex_cell(obj.arbitrator_wallet)


@admin.register(Order)
class OrderAdmin(OrderColumns, ExactSearchMixin, ReadOnlyMirrorAdmin):
    empty_message = ("No order mirrored yet: the event sync fills this list from the chain (Chain mirror → Sync "
                     "cursors shows how far it has got).")
    list_display = ("order_ref", "chain_name", "status_label", "amount_with_token", "buyer_link", "seller_link",
                    "arbitrator_short", "created", "updated")
    # Filters that never scan orders: choices are constants or the rollup; the date filter is a range of
    # orders_created_at_idx (no date_hierarchy, whose drill-down runs DISTINCT dates over the table).
    list_filter = ("chain", "status", TokenSymbolFilter, "close_reason", ("created_at", admin.DateFieldListFilter))
    list_select_related = ("buyer", "seller")
    ordering = ("-created_at",)
    sortable_by = ("order_ref", "created", "updated", "amount_with_token", "status_label", "chain_name")
    actions = [export_csv_action(
        ["chain", "onchain_id", "status", "amount", "token_symbol", "platform_fee", "buyer_id", "seller_id",
         "arbitrator_wallet", "created_at", "updated_at", "created_tx_hash", "last_tx_hash"], "orders.csv")]
    fieldsets = (
        (None, {"fields": ("chain", "onchain_id", "status", "close_reason", "amount_with_token", "fee_detail",
                           "token_address", "related")}),
        ("Parties", {"fields": ("buyer_full", "seller_full", "arbitrator_link", "disputed_by")}),
        ("Times (UTC)", {"fields": ("created_at", "updated_at", "delivered_at", "disputed_at", "closed_at",
                                    "seller_deadline", "buyer_deadline", "dispute_deadline")}),
        ("Evidence", {"fields": ("evidence_links",)}),
        ("On chain", {"fields": ("created_tx_hash", "created_block", "last_tx_hash", "last_block")}),
    )
    readonly_fields = ("amount_with_token", "fee_detail", "related", "buyer_full", "seller_full", "arbitrator_link",
                       "evidence_links")

    @admin.display(description="platform fee")
    def fee_detail(self, obj: Order) -> str:
        return f"{obj.platform_fee.normalize():f} {obj.token_symbol}"

    @admin.display(description="buyer")
    def buyer_full(self, obj: Order) -> str:
        return link(obj.buyer, obj.buyer_id, copy_attrs(obj.buyer_id))

    @admin.display(description="seller")
    def seller_full(self, obj: Order) -> str:
        return link(obj.seller, obj.seller_id, copy_attrs(obj.seller_id))

    @admin.display(description="see also")
    def related(self, obj: Order) -> str:
        """Where staff go next from an order: its raw events, and its dispute review while it is disputed."""
        events = reverse("admin:chain_chainevent_changelist") + f"?q={obj.onchain_id}&chain__exact={obj.chain}"
        out = [a_tag(events, "raw events")]
        if obj.status == OrderStatus.DISPUTED:
            out.append(a_tag(reverse("admin:disputes_disputedorder_review", args=[obj.pk]), "dispute review"))
        return mark_safe(" · ".join(out))

    @admin.display(description="order", ordering="onchain_id")
    def order_ref(self, obj: Order) -> str:
        return f"#{obj.onchain_id}"

    @admin.display(description="status", ordering="status")
    def status_label(self, obj: Order) -> str:
        return obj.status

    @admin.display(description="created (UTC)", ordering="created_at")
    def created(self, obj: Order) -> str:
        return utc_minute(obj.created_at)

    @admin.display(description="updated (UTC)", ordering="updated_at")
    def updated(self, obj: Order) -> str:
        return utc_minute(obj.updated_at)

    @admin.display(description="buyer")
    def buyer_link(self, obj: Order) -> str:
        return short_wallet_link(obj.buyer, obj.buyer_id)

    @admin.display(description="seller")
    def seller_link(self, obj: Order) -> str:
        return short_wallet_link(obj.seller, obj.seller_id)

    @admin.display(description="arbitrator")
    def arbitrator_link(self, obj: Order) -> str:
        if not obj.arbitrator_wallet:
            return "—"
        arb = Arbitrator.objects.filter(chain=obj.chain, wallet=obj.arbitrator_wallet).first()
        return link(arb, obj.arbitrator_wallet) if arb else obj.arbitrator_wallet

    @admin.display(description="evidence (IPFS)")
    def evidence_links(self, obj: Order) -> str:
        return ipfs_links(obj.evidence_cids)


@admin.register(UserProfile)
class UserProfileAdmin(ExactSearchMixin, ReadOnlyMirrorAdmin):
    empty_message = "No user yet: a wallet appears here with its first order on chain."
    list_display = ("wallet", "display_name", "tier", "rating", "is_blacklisted", "created_at", "last_active_at")
    list_filter = ("tier", "is_blacklisted", ("created_at", admin.DateFieldListFilter))
    list_select_related = ()  # no relation is shown
    ordering = ("-created_at",)
    search_fields = ("wallet",)
    search_wallet_fields = ("wallet",)
    search_text_fields = ("display_name",)
    search_help_text = "Exact wallet (0x…40 hex) or the start of a display name."
    fields = ("wallet", "display_name", "tier", "rating", "is_blacklisted", "created_at", "last_active_at",
              "orders_links")
    readonly_fields = ("orders_links",)
    actions = [export_csv_action(["wallet", "display_name", "tier", "rating", "is_blacklisted", "created_at"],
                                 "user_profiles.csv")]

    def get_object(self, request, object_id, from_field=None):
        """Also by wallet address, so that lists link a wallet to its profile without joining profiles."""
        if from_field is None and ADDRESS_RE.match(str(object_id)):
            return self.get_queryset(request).filter(wallet=str(object_id).lower()).first()
        return super().get_object(request, object_id, from_field)

    @admin.display(description="orders")
    def orders_links(self, obj: UserProfile) -> str:
        return format_html("{} · {} · {}",
                           changelist_link(Order, "as buyer", buyer__wallet__exact=obj.wallet),
                           changelist_link(Order, "as seller", seller__wallet__exact=obj.wallet),
                           changelist_link(Order, "all", q=obj.wallet))


@admin.register(Arbitrator)
class ArbitratorAdmin(ExactSearchMixin, ReadOnlyMirrorAdmin):
    empty_message = "No arbitrator yet: one appears when a wallet registers (stakes) in the arbitrator pool."
    list_display = ("wallet", "chain", "reputation", "at_risk", "is_active", "stake_amount", "total_resolved",
                    "total_earned", "cases_link", "registered_at")
    list_filter = ("chain", "is_active")
    list_select_related = ()
    ordering = ("-reputation",)
    search_fields = ("wallet",)
    search_wallet_fields = ("wallet",)

    @admin.display(description="at risk", boolean=True)
    def at_risk(self, obj: Arbitrator) -> bool:
        return obj.is_active and obj.reputation < 20

    @admin.display(description="cases")
    def cases_link(self, obj: Arbitrator) -> str:
        return changelist_link(Order, "cases", q=obj.wallet, chain__exact=obj.chain)
