"""The marketplace mirror: orders, arbitrators, user profiles and sync cursors, as the runbooks query them.

Table and column names follow the runbook SQL (orders, arbitrators, user_profiles,
event_sync_cursor) so that every query in it runs unchanged against this database.
The chain is the source of truth for these rows; only the sync writes them.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import OpClass
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now, Upper

from ..addresses import hex_check
from ..fields import TxHashField, WalletField

AMOUNT = {"max_digits": 96, "decimal_places": 18}
AMOUNT_CEILING = 10**78  # above every NUMERIC(96,18); CHECKs compare against it so that NaN is refused


def chain_choices() -> list[tuple[str, str]]:
    """The configured chains (settings.CHAINS), read when a form or a filter asks. A callable, so that migrations
    keep a reference to it instead of a list: adding a chain is configuration, never a migration."""
    return [(key, spec["name"]) for key, spec in settings.CHAINS.items()]


# Which chains exist is configuration, not the database's to know; a chain *name* is (backoffice.chain_settings):
# lower-case letters, digits and _, starting with a letter.
CHAIN_NAME_CHECK = Q(chain__regex=r"^[a-z][a-z0-9_]*$")


class OrderStatus(models.TextChoices):
    # Open states, in lifecycle order; the contract's Status enum values 1..8 map in this order.
    FUNDED = "funded", "Funded (awaiting delivery)"
    DELIVERED = "delivered", "Delivered (awaiting buyer)"
    COMPLETED = "completed", "Completed"
    DISPUTED = "disputed", "Disputed"
    RESOLVED_BUYER = "resolved_buyer", "Resolved for buyer"
    RESOLVED_SELLER = "resolved_seller", "Resolved for seller"
    CANCELLED = "cancelled", "Cancelled"
    EXPIRED = "expired", "Expired (seller timeout)"


OPEN_STATUSES = (OrderStatus.FUNDED, OrderStatus.DELIVERED, OrderStatus.DISPUTED)
CONTRACT_STATUS = {
    1: OrderStatus.FUNDED,
    2: OrderStatus.DELIVERED,
    3: OrderStatus.COMPLETED,
    4: OrderStatus.DISPUTED,
    5: OrderStatus.RESOLVED_BUYER,
    6: OrderStatus.RESOLVED_SELLER,
    7: OrderStatus.CANCELLED,
    8: OrderStatus.EXPIRED,
}


class CloseReason(models.TextChoices):
    CONFIRMED = "confirmed", "Buyer confirmed receipt"
    AUTO_RELEASED = "auto_released", "Auto-released to seller (buyer timeout)"
    SELLER_TIMEOUT = "seller_timeout", "Auto-expired (seller timeout)"
    CANCELLED = "cancelled", "Cancelled by seller"
    ARBITRATOR = "arbitrator", "Resolved by the arbitrator"
    OWNER = "owner", "Resolved by the owner (arbitrator fallback)"


class UserTier(models.TextChoices):
    NEW = "new", "New"
    BRONZE = "bronze", "Bronze"
    SILVER = "silver", "Silver"
    GOLD = "gold", "Gold"


def _wallet_check(*columns: str, table: str) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(
            condition=hex_check(col, 40) | Q(**{f"{col}__isnull": True}),
            name=f"{table}_{col}_canonical",
            violation_error_message=f"{col} must be 0x followed by 40 lower-case hex digits.",
        )
        for col in columns
    ]


class UserProfileQuerySet(models.QuerySet):
    def blacklisted(self):
        return self.filter(is_blacklisted=True)


class UserProfile(models.Model):
    """A marketplace user, identified by wallet (the same wallet on every chain)."""

    wallet = WalletField(unique=True, verbose_name="wallet", help_text="Canonical lower-case address.")
    display_name = models.CharField(max_length=64, blank=True, db_default="", verbose_name="display name")
    rating = models.DecimalField(max_digits=3, decimal_places=2, null=True, blank=True,
                                 help_text="Average review rating, 0.00–5.00.")
    tier = models.CharField(max_length=10, choices=UserTier.choices, db_default=UserTier.NEW,
                            help_text="Recalculated daily from completed volume and disputes.")
    is_blacklisted = models.BooleanField(
        db_default=False, verbose_name="blacklisted",
        help_text="Kept equal to the blacklist by a database trigger, also for raw SQL.",
    )
    created_at = models.DateTimeField(db_default=Now(), verbose_name="first seen",
                                      help_text="First on-chain activity (account age).")
    last_active_at = models.DateTimeField(null=True, blank=True, verbose_name="last active")
    # NULL, like first_seen_block, when the sync did not create the profile (seeding, raw inserts): the reorg
    # rollback deletes only profiles whose first_seen_chain is its chain. DJ001: changing it needs a migration.
    first_seen_chain = models.CharField(max_length=16, null=True, blank=True, editable=False)  # noqa: DJ001
    first_seen_block = models.BigIntegerField(null=True, blank=True, editable=False,
                                              help_text="Lets a reorg rollback remove profiles it created.")

    objects = UserProfileQuerySet.as_manager()

    class Meta:
        db_table = "user_profiles"
        ordering = ["-created_at"]
        verbose_name = "user profile"
        constraints = [
            *_wallet_check("wallet", table="user_profiles"),
            models.CheckConstraint(condition=Q(rating__gte=0, rating__lte=5) | Q(rating__isnull=True),
                                   name="user_profiles_rating_range",
                                   violation_error_message="rating must be between 0 and 5."),
            models.CheckConstraint(condition=Q(tier__in=UserTier.values), name="user_profiles_tier_valid",
                                   violation_error_message="tier must be one of " + ", ".join(UserTier.values) + "."),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="user_profiles_created_idx"),
            # The admin's search by the start of a display name (istartswith is UPPER(...) LIKE 'X%').
            models.Index(OpClass(Upper("display_name"), name="text_pattern_ops"), name="user_profiles_name_prefix_idx"),
        ]

    def __str__(self) -> str:
        return self.display_name or self.wallet


class OrderQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=OPEN_STATUSES)

    def disputed(self):
        return self.filter(status=OrderStatus.DISPUTED)

    def on_chain(self, chain: str):
        return self.filter(chain=chain)


class Order(models.Model):
    """One escrow order, mirrored from the escrow contract of its chain."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    onchain_id = models.BigIntegerField(verbose_name="order id", help_text="The order id in the escrow contract.")
    buyer = models.ForeignKey(UserProfile, on_delete=models.PROTECT, to_field="wallet", db_column="buyer_wallet",
                              related_name="orders_bought", verbose_name="buyer")
    seller = models.ForeignKey(UserProfile, on_delete=models.PROTECT, to_field="wallet", db_column="seller_wallet",
                               related_name="orders_sold", verbose_name="seller")
    arbitrator_wallet = WalletField(null=True, blank=True, verbose_name="arbitrator",
                                    help_text="Assigned by the arbitrator pool when a dispute opens.")
    token_address = WalletField(verbose_name="token", help_text="ERC-20 contract of the escrowed token.")
    token_symbol = models.CharField(max_length=16, db_default="", verbose_name="token symbol")
    amount = models.DecimalField(**AMOUNT, help_text="Escrowed amount in token units (not wei).")
    platform_fee = models.DecimalField(**AMOUNT, db_default=0, help_text="Platform fee in token units.")
    status = models.CharField(max_length=20, choices=OrderStatus.choices, db_default=OrderStatus.FUNDED)
    # NULL while the order is open, no reason yet: the mirror's COPY and the seeding write NULL, never ''.
    close_reason = models.CharField(max_length=20, choices=CloseReason.choices, null=True, blank=True,  # noqa: DJ001
                                    verbose_name="close reason")
    created_at = models.DateTimeField(db_default=Now(), help_text="Block time of the OrderCreated event (UTC).")
    updated_at = models.DateTimeField(db_default=Now(), help_text="Block time of the last state change (UTC).")
    delivered_at = models.DateTimeField(null=True, blank=True)
    disputed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    seller_deadline = models.DateTimeField(null=True, blank=True, help_text="Auto-expire after this (seller timeout).")
    buyer_deadline = models.DateTimeField(null=True, blank=True, help_text="Auto-release after this (buyer timeout).")
    dispute_deadline = models.DateTimeField(null=True, blank=True,
                                            help_text="After this the owner may resolve in the arbitrator's place.")
    disputed_by = WalletField(null=True, blank=True, verbose_name="disputed by")
    evidence_cids = ArrayField(models.CharField(max_length=128), db_default=[], blank=True,
                               verbose_name="evidence", help_text="IPFS CIDs submitted with the dispute.")
    created_tx_hash = TxHashField(verbose_name="creation tx")
    last_tx_hash = TxHashField(verbose_name="last tx")
    created_block = models.BigIntegerField(db_default=0)
    last_block = models.BigIntegerField(db_default=0)

    objects = OrderQuerySet.as_manager()

    class Meta:
        db_table = "orders"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "onchain_id"], name="orders_chain_onchain_id_uniq"),
            models.CheckConstraint(condition=CHAIN_NAME_CHECK, name="orders_chain_valid",
                                   violation_error_message="chain must be a chain name: lower-case letters, digits "
                                                           "and _, starting with a letter."),
            models.CheckConstraint(condition=Q(status__in=OrderStatus.values), name="orders_status_valid",
                                   violation_error_message="status must be one of "
                                                           + ", ".join(OrderStatus.values) + "."),
            # The upper bound also refuses NaN, which PostgreSQL sorts above every number.
            models.CheckConstraint(condition=Q(amount__gte=0, amount__lt=AMOUNT_CEILING), name="orders_amount_valid",
                                   violation_error_message="amount must be a number, zero or more."),
            models.CheckConstraint(condition=Q(platform_fee__gte=0, platform_fee__lt=AMOUNT_CEILING),
                                   name="orders_fee_valid",
                                   violation_error_message="platform_fee must be a number, zero or more."),
            models.CheckConstraint(condition=Q(onchain_id__gte=0), name="orders_onchain_id_non_negative"),
            # buyer_wallet / seller_wallet are canonical through their foreign key to user_profiles.
            *_wallet_check("arbitrator_wallet", "token_address", "disputed_by", table="orders"),
            models.CheckConstraint(condition=hex_check("created_tx_hash", 64) & hex_check("last_tx_hash", 64),
                                   name="orders_tx_hash_canonical"),
        ]
        indexes = [
            models.Index(fields=["created_at"], name="orders_created_at_idx"),
            models.Index(fields=["status", "created_at"], name="orders_status_created_idx"),
            models.Index(fields=["updated_at"], name="orders_updated_at_idx"),
            models.Index(fields=["created_tx_hash"], name="orders_created_tx_idx"),
            models.Index(fields=["last_tx_hash"], name="orders_last_tx_idx"),
            models.Index(fields=["onchain_id"], name="orders_onchain_id_idx"),
            models.Index(fields=["arbitrator_wallet", "updated_at"], name="orders_arbitrator_idx",
                         condition=Q(arbitrator_wallet__isnull=False)),
            # The dispute queue and RB-04 look only at disputed orders.
            models.Index(fields=["disputed_at"], name="orders_disputed_queue_idx", condition=Q(status="disputed")),
            models.Index(fields=["seller", "created_at"], name="orders_seller_disputed_idx",
                         condition=Q(status="disputed")),
            models.Index(fields=["buyer", "created_at"], name="orders_buyer_disputed_idx",
                         condition=Q(status="disputed")),
            # Timeout automation (runbook §5) scans only orders that can time out.
            models.Index(fields=["seller_deadline"], name="orders_seller_timeout_idx", condition=Q(status="funded")),
            models.Index(fields=["buyer_deadline"], name="orders_buyer_timeout_idx", condition=Q(status="delivered")),
        ]

    def __str__(self) -> str:
        return f"{self.chain} #{self.onchain_id}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


class ArbitratorQuerySet(models.QuerySet):
    def active(self):
        return self.filter(is_active=True)

    def at_risk(self):
        """Runbook §8: active arbitrators whose reputation fell below 20."""
        return self.filter(is_active=True, reputation__lt=20)


class Arbitrator(models.Model):
    """A member of a chain's ArbitratorPool, mirrored from its events."""

    chain = models.CharField(max_length=16, choices=chain_choices)
    wallet = WalletField()
    stake_amount = models.DecimalField(**AMOUNT, db_default=0, help_text="Stake in the chain's native coin.")
    reputation = models.IntegerField(db_default=50, help_text="0–100; below 20 is at risk, below 10 deactivated.")
    total_resolved = models.IntegerField(db_default=0)
    total_earned = models.DecimalField(**AMOUNT, db_default=0, help_text="Arbitration fees earned, token units.")
    is_active = models.BooleanField(db_default=True)
    registered_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    objects = ArbitratorQuerySet.as_manager()

    class Meta:
        db_table = "arbitrators"
        ordering = ["-reputation"]
        constraints = [
            models.UniqueConstraint(fields=["chain", "wallet"], name="arbitrators_chain_wallet_uniq"),
            models.CheckConstraint(condition=CHAIN_NAME_CHECK, name="arbitrators_chain_valid"),
            models.CheckConstraint(condition=Q(reputation__gte=0, reputation__lte=100),
                                   name="arbitrators_reputation_range"),
            models.CheckConstraint(condition=Q(stake_amount__gte=0, stake_amount__lt=AMOUNT_CEILING)
                                   & Q(total_earned__gte=0, total_earned__lt=AMOUNT_CEILING) & Q(total_resolved__gte=0),
                                   name="arbitrators_amounts_valid"),
            *_wallet_check("wallet", table="arbitrators"),
        ]
        indexes = [models.Index(fields=["is_active", "reputation"], name="arbitrators_active_rep_idx")]

    def __str__(self) -> str:
        return f"{self.wallet} ({self.chain})"


class EventSyncCursor(models.Model):
    """How far the sync has applied each chain's events (runbook RB-03)."""

    chain = models.CharField(max_length=16, choices=chain_choices, primary_key=True)
    last_block = models.BigIntegerField(db_default=0, help_text="Last block whose events are applied.")
    last_block_hash = TxHashField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now(), help_text="When the cursor last moved (UTC).")
    head_block = models.BigIntegerField(null=True, blank=True, help_text="Chain head at the last poll.")
    head_seen_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(db_default="", blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "event_sync_cursor"
        ordering = ["chain"]
        verbose_name = "sync cursor"
        constraints = [
            models.CheckConstraint(condition=CHAIN_NAME_CHECK, name="event_sync_cursor_chain_valid"),
            models.CheckConstraint(condition=Q(last_block__gte=0), name="event_sync_cursor_block_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.chain} @ {self.last_block}"

    @property
    def lag_blocks(self) -> int | None:
        return None if self.head_block is None else max(self.head_block - self.last_block, 0)
