"""Rollups and facts kept current by the sync and by beat, so pages and /metrics never scan orders."""
from __future__ import annotations

from django.db import models

from ..fields import WalletField
from .mirror import AMOUNT, chain_choices


class DailyOrderStats(models.Model):
    """Orders per chain, token and creation day, by current status: the rollup behind metrics and charts.

    Kept current by the sync (the created-days of every touched order are recounted in the same
    transaction), so dashboards and /metrics never scan the orders table.
    """

    chain = models.CharField(max_length=16, choices=chain_choices)
    token_symbol = models.CharField(max_length=16)
    day = models.DateField()
    orders = models.IntegerField(default=0)
    funded = models.IntegerField(default=0)
    delivered = models.IntegerField(default=0)
    completed = models.IntegerField(default=0)
    auto_released = models.IntegerField(default=0)
    disputed = models.IntegerField(default=0)
    resolved_buyer = models.IntegerField(default=0)
    resolved_seller = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)
    expired = models.IntegerField(default=0)
    volume = models.DecimalField(**AMOUNT, default=0, help_text="All orders' amounts.")
    completed_volume = models.DecimalField(**AMOUNT, default=0)
    completed_fees = models.DecimalField(**AMOUNT, default=0)

    class Meta:
        db_table = "chain_daily_order_stats"
        ordering = ["-day", "chain", "token_symbol"]
        verbose_name = "daily order statistics"
        verbose_name_plural = "daily order statistics"
        constraints = [models.UniqueConstraint(fields=["chain", "token_symbol", "day"], name="daily_order_stats_uniq")]

    def __str__(self) -> str:
        return f"{self.day} {self.chain} {self.token_symbol}"


class ChainState(models.Model):
    """Facts about a chain's contracts kept by the sync and the scheduled checks (cheap to read)."""

    chain = models.CharField(max_length=16, choices=chain_choices, primary_key=True)
    paused = models.BooleanField(null=True, help_text="From the last Paused/Unpaused event or live check.")
    paused_checked_at = models.DateTimeField(null=True, blank=True)
    solvency_ok = models.BooleanField(null=True, help_text="Escrow balance equals the open orders, per token.")
    solvency_checked_at = models.DateTimeField(null=True, blank=True)
    solvency_detail = models.JSONField(default=dict, blank=True)
    solvency_block = models.BigIntegerField(null=True, blank=True,
                                            help_text="The block both sides of the last solvency check were read at "
                                                      "(the mirror's cursor).")
    solvency_short_since = models.BigIntegerField(
        null=True, blank=True, help_text="The first block of the current run of checks that found the escrow short: "
                                         "short again at a later block is a page, once only an observation.")
    custody_snapshot = models.JSONField(null=True, blank=True,
                                        help_text="Owner, Safe owners, threshold and guardians at the last check.")
    custody_checked_at = models.DateTimeField(null=True, blank=True)
    contract_settings = models.JSONField(null=True, blank=True,
                                         help_text="Treasury, pool, fees, timeouts and supported tokens at the last "
                                                   "check.")
    contract_settings_checked_at = models.DateTimeField(null=True, blank=True)
    contract_settings_pending = models.JSONField(
        null=True, blank=True, help_text="A change of owner settings no back-office action explains, seen once (its "
                                         "block and what changed): seen again at a later block, it pages.")
    custody_pending = models.JSONField(
        null=True, blank=True, help_text="A custody change seen once (its block and what changed): seen again at a "
                                         "later block, it pages.")

    class Meta:
        db_table = "chain_state"
        ordering = ["chain"]

    def __str__(self) -> str:
        return self.chain


class TopSeller(models.Model):
    """Top sellers by completed volume over the last 30 days (runbook §9), a snapshot refreshed by beat.

    The ranking needs a pass over a month of orders, too slow for a page view at a million orders;
    the dashboard reads this table instead and shows when it was computed.
    """

    rank = models.PositiveSmallIntegerField(unique=True)
    seller_wallet = WalletField(verbose_name="seller wallet")
    display_name = models.CharField(max_length=64, blank=True, default="")
    rating = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True)
    orders = models.IntegerField(help_text="Completed orders in the window.")
    total_volume = models.DecimalField(**AMOUNT, help_text="Sum of the completed orders' amounts, token units.")
    window_start = models.DateTimeField(help_text="Orders created after this time count (UTC).")
    computed_at = models.DateTimeField(help_text="When the snapshot was taken (UTC).")

    class Meta:
        db_table = "chain_top_sellers"
        ordering = ["rank"]
        verbose_name = "top seller (30 days)"
        verbose_name_plural = "top sellers (30 days)"

    def __str__(self) -> str:
        return f"#{self.rank} {self.display_name or self.seller_wallet}"
