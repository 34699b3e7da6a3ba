"""The sync's own records: raw events, recent block hashes, tokens, RPC providers, catch-ups, reconciliation drift."""
from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from ..fields import TxHashField, WalletField
from .mirror import CHAIN_NAME_CHECK, chain_choices


class ChainEventQuerySet(models.QuerySet):
    def owner_events(self, chain: str) -> ChainEventQuerySet:
        """The events of no order and no arbitrator (settings, pause, ownership), through their own index."""
        return self.filter(chain=chain, order_id__isnull=True, wallet__isnull=True)


class ChainEvent(models.Model):
    """One raw log of the escrow or arbitrator pool, as fetched: the mirror is rebuilt from these."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    block_number = models.BigIntegerField()
    block_hash = TxHashField()
    block_time = models.DateTimeField(help_text="Block timestamp (UTC).")
    tx_hash = TxHashField(verbose_name="tx hash")
    log_index = models.IntegerField()
    address = WalletField(help_text="Emitting contract.")
    contract = models.CharField(max_length=16, blank=True, help_text="escrow or pool.")
    event = models.CharField(max_length=64, blank=True, help_text="Event name; empty when it could not be decoded.")
    order_id = models.BigIntegerField(null=True, blank=True, verbose_name="order id",
                                      help_text="On-chain order id the event concerns.")
    wallet = WalletField(null=True, blank=True, help_text="Arbitrator the event concerns (pool events).")
    args = models.JSONField(default=dict, blank=True)
    decode_error = models.TextField(blank=True, db_default="",
                                    help_text="Why the log was skipped (unknown topic, bad data); empty when applied.")

    objects = ChainEventQuerySet.as_manager()

    class Meta:
        db_table = "chain_events"
        ordering = ["-block_number", "-log_index"]
        verbose_name = "chain event"
        constraints = [
            # tx_hash first: the same index serves the admin's search by transaction hash.
            models.UniqueConstraint(fields=["tx_hash", "log_index", "chain"], name="chain_events_idempotency"),
            models.CheckConstraint(condition=CHAIN_NAME_CHECK, name="chain_events_chain_valid"),
        ]
        indexes = [
            models.Index(fields=["chain", "block_number"], name="chain_events_block_idx"),
            models.Index(fields=["chain", "order_id", "block_number", "log_index"], name="chain_events_order_idx",
                         condition=Q(order_id__isnull=False)),
            models.Index(fields=["chain", "wallet"], name="chain_events_wallet_idx", condition=Q(wallet__isnull=False)),
            models.Index(fields=["chain"], name="chain_events_malformed_idx", condition=~Q(decode_error="")),
            # The owner's few events (settings, pause, ownership) among millions of order events.
            models.Index(fields=["chain", "event"], name="chain_events_owner_idx",
                         condition=Q(order_id__isnull=True, wallet__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.chain} {self.event or '?'} @{self.block_number}:{self.log_index}"


class BlockHash(models.Model):
    """Hashes of recently applied blocks (the unconfirmed window), to detect reorgs."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    number = models.BigIntegerField()
    hash = TxHashField()

    class Meta:
        db_table = "chain_block_hashes"
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["chain", "number"], name="chain_block_hashes_uniq")]

    def __str__(self) -> str:
        return f"{self.chain} {self.number} {self.hash[:10]}"


class Token(models.Model):
    """An ERC-20 seen in orders, with the decimals used to turn raw amounts into token units."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    address = WalletField()
    symbol = models.CharField(max_length=16)
    decimals = models.PositiveSmallIntegerField()

    class Meta:
        db_table = "chain_tokens"
        ordering = ["chain", "symbol"]
        constraints = [models.UniqueConstraint(fields=["chain", "address"], name="chain_tokens_uniq")]

    def __str__(self) -> str:
        return f"{self.symbol} ({self.chain})"


class ProviderState(models.TextChoices):
    CLOSED = "closed", "Closed (healthy)"
    OPEN = "open", "Open (failing, skipped)"
    HALF_OPEN = "half_open", "Half-open (trial call)"


class RpcProvider(models.Model):
    """Last known state of one RPC provider's circuit breaker (runbook RB-07), for staff and metrics."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    role = models.CharField(max_length=10, help_text="primary or fallback")
    url = models.CharField(max_length=300, help_text="Shown without credentials or API keys.")
    state = models.CharField(max_length=10, choices=ProviderState.choices, default=ProviderState.CLOSED)
    consecutive_failures = models.IntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True, help_text="Moving average of successful calls.")
    calls = models.BigIntegerField(default=0)
    failures = models.BigIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    in_use = models.BooleanField(default=False, help_text="The provider the last call went through.")
    # Totals since the row was created, added to by every worker's syncs (each adds what it counted since its
    # last save), so /metrics in the web process sees them as monotonic counters.
    rate_limited = models.BigIntegerField(default=0, help_text="Rate-limit answers (HTTP 429, -32005 …) waited out.")
    rate_limit_wait_seconds = models.FloatField(default=0.0, help_text="Seconds spent waiting out rate limits.")
    budget_wait_seconds = models.FloatField(
        default=0.0, help_text="Seconds requests waited for the request budget (<CHAIN>_RPC_MAX_RPS).")
    getlogs_splits_too_big = models.BigIntegerField(
        default=0, help_text="eth_getLogs ranges halved because the provider refused their size.")
    getlogs_splits_timeout = models.BigIntegerField(
        default=0, help_text="eth_getLogs ranges halved because the provider timed out on them.")
    max_block_range = models.IntegerField(
        null=True, blank=True, verbose_name="max block range",
        help_text="The most blocks the provider answers in one eth_getLogs: <PREFIX>_RPC_MAX_BLOCK_RANGE (the "
                  "fallback's own where set), or read from its refusal. Empty: no limit known.")
    max_block_range_source = models.CharField(max_length=10, blank=True, default="",
                                              help_text="configured, or learnt (from a refusal).")
    max_block_range_learnt_at = models.DateTimeField(null=True, blank=True,
                                                     help_text="When the provider's refusal named its limit.")
    max_block_range_refusal = models.TextField(blank=True, default="",
                                               help_text="The provider's words the limit was learnt from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "chain_rpc_providers"
        ordering = ["chain", "role"]
        verbose_name = "RPC provider"
        constraints = [models.UniqueConstraint(fields=["chain", "role"], name="chain_rpc_providers_uniq")]

    def __str__(self) -> str:
        return f"{self.chain} {self.role}"


class SyncCatchup(models.Model):
    """A chain's catch-up (a sync run starting far behind, and the runs after it until the cursor is near the head):
    blocks done of blocks to go, events, the current rate. Written in the transactions that move the cursor, for the
    Sync cursors page, the sync's logs and /metrics. One row per chain: a new catch-up replaces the last one."""

    chain = models.CharField(max_length=16, choices=chain_choices, primary_key=True)
    started_at = models.DateTimeField()
    from_block = models.BigIntegerField(help_text="The cursor when the catch-up began.")
    target_block = models.BigIntegerField(help_text="Head minus the confirmations, at the latest run.")
    last_block = models.BigIntegerField(help_text="The cursor now.")
    events = models.BigIntegerField(default=0, help_text="Events applied since the catch-up began.")
    blocks_per_second = models.FloatField(null=True, blank=True, help_text="Over the last few seconds of progress.")
    events_per_second = models.FloatField(null=True, blank=True, help_text="Over the last few seconds of progress.")
    mark_at = models.DateTimeField(help_text="Where the current rate is measured from.")
    mark_block = models.BigIntegerField()
    mark_events = models.BigIntegerField(default=0)
    in_flight = models.IntegerField(null=True, blank=True, help_text="eth_getLogs requests in flight at the last run.")
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True, help_text="When the cursor reached the head.")

    class Meta:
        db_table = "chain_sync_catchup"
        ordering = ["chain"]
        verbose_name = "sync catch-up"
        constraints = [models.CheckConstraint(condition=CHAIN_NAME_CHECK, name="chain_sync_catchup_chain_valid")]

    def __str__(self) -> str:
        return f"{self.chain} catch-up from {self.from_block}"


class ReconciliationDrift(models.Model):
    """A difference between the mirror and the contract's orders(uint256), found by reconciliation."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    onchain_id = models.BigIntegerField(verbose_name="order id")
    field = models.CharField(max_length=32)
    mirror_value = models.TextField(blank=True)
    chain_value = models.TextField(blank=True)
    at_block = models.BigIntegerField(help_text="Block both sides were read at.")
    detected_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "chain_reconciliation_drift"
        ordering = ["-detected_at"]
        verbose_name = "reconciliation drift"
        indexes = [models.Index(fields=["chain", "onchain_id"], name="chain_drift_order_idx")]

    def __str__(self) -> str:
        return f"{self.chain} #{self.onchain_id} {self.field}"
