"""Admin for the sync's own records: cursors, raw events, RPC providers, tokens, reconciliation drift."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError

from backoffice.admin_utils import (
    ReadOnlyMirrorAdmin,
    admin_page,
    changelist_link,
    errors_to_form,
    export_csv_action,
    hex_cell,
)

from . import catchup, services
from .admin_search import ExactSearchMixin
from .config import get_chain_config
from .models import ChainEvent, EventSyncCursor, Order, ReconciliationDrift, RpcProvider, Token


class ResyncForm(forms.Form):
    block = forms.IntegerField(min_value=1, help_text="The first block whose events are applied again.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Required; written to the audit log.")


@admin.register(EventSyncCursor)
class EventSyncCursorAdmin(ReadOnlyMirrorAdmin):
    empty_message = ("No sync has run yet: beat polls each chain every few seconds (Periodic tasks → poll-…-events); a "
                     "worker must be running.")
    list_display = ("chain", "last_block", "head_block", "lag_blocks_display", "lag_seconds", "confirmations",
                    "catchup_display", "updated_at", "last_error_short", "last_error_at", "events_link")
    readonly_fields = ("lag_blocks_display", "lag_seconds", "confirmations", "catchup_display")
    actions = ["resync_from_block"]

    def has_change_permission(self, request, obj=None) -> bool:
        # The re-sync action needs change permission; the form itself stays read-only.
        return request.user.has_perm("chain.change_eventsynccursor") if obj is None else False

    @admin.display(description="lag (blocks)")
    def lag_blocks_display(self, obj: EventSyncCursor):
        return obj.lag_blocks if obj.lag_blocks is not None else "—"

    @admin.display(description="lag (seconds)")
    def lag_seconds(self, obj: EventSyncCursor):
        if obj.lag_blocks is None:
            return "—"
        return round(obj.lag_blocks * get_chain_config(obj.chain).block_time, 1)

    @admin.display(description="confirmations")
    def confirmations(self, obj: EventSyncCursor) -> int:
        return get_chain_config(obj.chain).confirmations

    @admin.display(description="last error")
    def last_error_short(self, obj: EventSyncCursor) -> str:
        return (obj.last_error[:100] + "…") if len(obj.last_error) > 100 else (obj.last_error or "—")

    @admin.display(description="catch-up")
    def catchup_display(self, obj: EventSyncCursor) -> str:
        """A catch-up that has lasted, or is expected to last, a minute: how far, how fast, when done."""
        progress = catchup.current(obj.chain)
        return progress.describe() if progress is not None and progress.is_long() else "—"

    @admin.display(description="events")
    def events_link(self, obj: EventSyncCursor) -> str:
        return changelist_link(ChainEvent, "raw events", chain__exact=obj.chain)

    @admin.action(description="Re-sync from block N…", permissions=["change"])
    def resync_from_block(self, request, queryset):
        cursors = list(queryset)
        if len(cursors) != 1:
            self.message_user(request, "Select exactly one chain to re-sync.", messages.ERROR)
            return None
        cursor = cursors[0]
        form = ResyncForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            try:
                summary = services.resync_from_block(actor=request.user, chain=cursor.chain,
                                                     block=form.cleaned_data["block"],
                                                     reason=form.cleaned_data["reason"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                self.message_user(request, f"{cursor.chain}: rolled back to block {form.cleaned_data['block'] - 1} "
                                           f"({summary['events_removed']} events removed); the next sync re-applies "
                                           "them.", messages.SUCCESS)
                return None
        return admin_page(self, request, "admin/chain/resync_confirm.html",
                          title=f"Re-sync {cursor.chain} from a block", cursor=cursor, form=form,
                          selected=request.POST.getlist(admin.helpers.ACTION_CHECKBOX_NAME))


class MalformedFilter(admin.SimpleListFilter):
    title = "decoding"
    parameter_name = "decoded"

    def lookups(self, request, model_admin):
        return (("yes", "Applied"), ("no", "Malformed (skipped)"))

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(decode_error="")
        if self.value() == "no":
            return queryset.exclude(decode_error="")
        return queryset


class ContractFilter(admin.SimpleListFilter):
    title = "contract"
    parameter_name = "contract"

    def lookups(self, request, model_admin):
        from .events import CONTRACTS

        return [(key, name) for key, name in CONTRACTS.items()]

    def queryset(self, request, queryset):
        return queryset.filter(contract=self.value()) if self.value() else queryset


class EventNameFilter(admin.SimpleListFilter):
    """Event names from the committed ABIs: a constant list, not SELECT DISTINCT over every raw log."""

    title = "event"
    parameter_name = "event"

    def lookups(self, request, model_admin):
        from .events import specs

        return [(name, name) for name in sorted({spec.name for spec in specs().values()})]

    def queryset(self, request, queryset):
        return queryset.filter(event=self.value()) if self.value() else queryset


@admin.register(ChainEvent)
class ChainEventAdmin(ExactSearchMixin, ReadOnlyMirrorAdmin):
    empty_message = "No event synced yet: raw contract logs land here as the sync reads them."
    list_display = ("chain", "block_number", "log_index", "event", "order_link", "tx_short", "block_time",
                    "decode_error_short")
    list_filter = ("chain", ContractFilter, MalformedFilter, EventNameFilter)
    list_select_related = ()  # the order is linked by its id: no join
    ordering = ("-block_number", "-log_index")
    search_fields = ("tx_hash",)
    search_hash_fields = ("tx_hash", "block_hash")
    search_wallet_fields = ("wallet", "address")
    search_id_fields = ("order_id", "block_number")
    search_help_text = "Exact: a tx hash, an order id or a block number, or a wallet."
    actions = [export_csv_action(["chain", "block_number", "log_index", "tx_hash", "event", "order_id", "args",
                                  "decode_error"], "chain_events.csv")]

    @admin.display(description="order")
    def order_link(self, obj: ChainEvent) -> str:
        if obj.order_id is None:
            return "—"
        return changelist_link(Order, f"#{obj.order_id}", q=obj.order_id, chain__exact=obj.chain)

    @admin.display(description="tx")
    def tx_short(self, obj: ChainEvent) -> str:
        return hex_cell(obj.tx_hash)

    @admin.display(description="decode error")
    def decode_error_short(self, obj: ChainEvent) -> str:
        return obj.decode_error[:80] or "—"


@admin.register(RpcProvider)
class RpcProviderAdmin(ReadOnlyMirrorAdmin):
    empty_message = "No provider yet: the first sync run records each chain's primary and fallback RPC here."
    list_display = ("chain", "role", "url", "state", "in_use", "latency_ms_display", "max_block_range_display",
                    "consecutive_failures", "calls", "failures", "rate_limited", "last_success_at", "last_failure_at",
                    "last_error_short")
    list_filter = ("chain", "state")

    @admin.display(description="latency (ms)")
    def latency_ms_display(self, obj: RpcProvider):
        return round(obj.latency_ms, 1) if obj.latency_ms is not None else "—"

    @admin.display(description="max block range")
    def max_block_range_display(self, obj: RpcProvider) -> str:
        """The eth_getLogs cap and where it comes from; a learnt one with the provider's words."""
        if obj.max_block_range is None:
            return "—"
        if obj.max_block_range_source == "learnt":
            return f"{obj.max_block_range:,} (learnt: “{obj.max_block_range_refusal[:80]}”)"
        return f"{obj.max_block_range:,} ({obj.max_block_range_source or 'configured'})"

    @admin.display(description="last error")
    def last_error_short(self, obj: RpcProvider) -> str:
        return obj.last_error[:80] or "—"


@admin.register(Token)
class TokenAdmin(ReadOnlyMirrorAdmin):
    empty_message = "No token yet: the sync reads a token's symbol and decimals the first time an order uses it."
    list_display = ("symbol", "chain", "address", "decimals")
    list_filter = ("chain",)


@admin.register(ReconciliationDrift)
class ReconciliationDriftAdmin(ReadOnlyMirrorAdmin):
    empty_message = "No drift: every reconciliation so far found the mirror equal to the contract."
    list_display = ("chain", "onchain_id", "field", "mirror_value", "chain_value", "at_block", "detected_at",
                    "resolved_at")
    list_filter = ("chain", "field", ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("=onchain_id",)



