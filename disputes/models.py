"""Trust and safety records: the wallet blacklist (runbook RB-04)."""
from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from chain.addresses import hex_check
from chain.fields import WalletField
from chain.models import AMOUNT, Order, chain_choices

# The longest reason a person types (the form, the import, the service): a paragraph, not a pasted document.
REASON_MAX_LENGTH = 2000


class BlacklistSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    AUTOMATIC = "automatic", "Automatic"
    IMPORT = "import", "Import"
    SANCTIONS = "sanctions", "Sanctions screening"


# What staff may choose by hand (the add form, a CSV import, RB-04): "sanctions" is the screening's own source,
# always with a list version or an oracle block as its evidence.
STAFF_SOURCES = (BlacklistSource.MANUAL, BlacklistSource.AUTOMATIC, BlacklistSource.IMPORT)


class BlacklistQuerySet(models.QuerySet):
    def active(self):
        return self.filter(lifted_at__isnull=True)


class Blacklist(models.Model):
    """A blacklisting of one wallet. Lifting keeps the row (history); one active row per wallet.

    RB-04's `INSERT INTO blacklist (wallet, reason, source) VALUES (...)` works as written:
    every other column has a database default, and triggers canonicalise the wallet and set
    `user_profiles.is_blacklisted`.
    """

    wallet = WalletField(help_text="Canonical lower-case address.")
    reason = models.TextField(help_text="Why this wallet is blacklisted; shown to every reviewer.")
    source = models.CharField(max_length=10, choices=BlacklistSource.choices, db_default=BlacklistSource.MANUAL)
    created_at = models.DateTimeField(db_default=Now())
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+", help_text="Empty when added by raw SQL or automation.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Lifted automatically after this time (UTC).")
    order = models.ForeignKey("chain.Order", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                              db_constraint=True, help_text="The dispute or order that justified it.")
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+")
    lift_reason = models.TextField(db_default="", blank=True)

    objects = BlacklistQuerySet.as_manager()

    class Meta:
        db_table = "blacklist"
        ordering = ["-created_at"]
        verbose_name = "blacklist entry"
        verbose_name_plural = "blacklist"
        constraints = [
            models.UniqueConstraint(fields=["wallet"], condition=Q(lifted_at__isnull=True),
                                    name="blacklist_one_active_per_wallet",
                                    violation_error_message="This wallet is already blacklisted."),
            models.CheckConstraint(condition=hex_check("wallet", 40), name="blacklist_wallet_canonical",
                                   violation_error_message="wallet must be 0x followed by 40 hex digits."),
            models.CheckConstraint(condition=Q(source__in=BlacklistSource.values), name="blacklist_source_valid",
                                   violation_error_message="source must be manual, automatic, import or "
                                                           "sanctions."),
            models.CheckConstraint(condition=~Q(reason=""), name="blacklist_reason_required",
                                   violation_error_message="reason is required."),
        ]
        indexes = [models.Index(fields=["expires_at"], name="blacklist_expiry_idx",
                                condition=Q(lifted_at__isnull=True, expires_at__isnull=False))]

    def __str__(self) -> str:
        return f"{self.wallet} ({'active' if self.lifted_at is None else 'lifted'})"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


class Recommendation(models.TextChoices):
    FAVOR_BUYER = "favor_buyer", "Resolve for the buyer"
    FAVOR_SELLER = "favor_seller", "Resolve for the seller"
    NEEDS_INFO = "needs_info", "Needs more evidence"
    ESCALATE = "escalate", "Escalate (fraud suspected)"


class DisputeCase(models.Model):
    """Staff's work on one disputed order: who has it, and what they recommend. The order stays the chain's."""

    order = models.OneToOneField("chain.Order", on_delete=models.PROTECT, related_name="dispute_case",
                                 primary_key=True)
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="+", help_text="The reviewer who claimed the case.")
    claimed_at = models.DateTimeField(null=True, blank=True)
    recommendation = models.CharField(max_length=16, choices=Recommendation.choices, blank=True, default="")
    recommendation_note = models.TextField(blank=True, default="")
    recommended_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                       related_name="+")
    recommended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "dispute_cases"
        ordering = ["order"]
        permissions = [("review_dispute", "Can claim, note and recommend on disputes")]
        indexes = [models.Index(fields=["assignee"], name="dispute_cases_assignee_idx")]

    def __str__(self) -> str:
        return f"case {self.order}"


class DisputeNote(models.Model):
    """An internal note on a dispute. Append-only (database trigger): notes are evidence of the review."""

    case = models.ForeignKey(DisputeCase, on_delete=models.PROTECT, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "dispute_notes"
        ordering = ["created_at"]
        constraints = [models.CheckConstraint(condition=~Q(body=""), name="dispute_notes_body_required")]

    def __str__(self) -> str:
        return f"note by {self.author} on {self.case}"


class ReviewFlag(models.Model):
    """A wallet flagged for human review (repeat offender, new account with many disputes, orders created too
    fast). Never a blacklisting."""

    wallet = WalletField()
    role = models.CharField(max_length=10, help_text="seller, buyer, account, velocity (orders created too fast), "
                                                     "sanctions (a sanctions hit) or delisted (left every sanctions "
                                                     "list while blacklisted for sanctions: lift it?)")
    reason = models.TextField()
    disputes = models.IntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    resolution = models.TextField(blank=True, default="")

    class Meta:
        db_table = "dispute_review_flags"
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["wallet", "role"], condition=Q(resolved_at__isnull=True),
                                               name="review_flags_one_open_per_wallet_role")]

    def __str__(self) -> str:
        return f"{self.wallet} ({self.role})"


class DisputedOrder(Order):
    """The dispute queue: disputed orders, as trust and safety staff work them."""

    class Meta:
        proxy = True
        verbose_name = "dispute"
        verbose_name_plural = "dispute queue"


# ---------------------------------------------------------------------------- sanctions screening


class SanctionsListFormat(models.TextChoices):
    SDN_ADVANCED_XML = "sdn_advanced_xml", "OFAC SDN advanced XML (sdn_advanced.xml)"
    SDN_XML = "sdn_xml", "OFAC SDN XML (sdn.xml)"
    ADDRESS_LIST = "address_list", "Address list (one address a line, or a JSON array)"


class SanctionsListVersion(models.Model):
    """One import of one sanctions list, kept for good: its entries are what the list held then.

    A list is a `list_key`: the SDN XML (every EVM digital-currency address in it) or a derived per-asset address
    list. Each version is compared with the previous version of the same list when it is imported.
    """

    list_key = models.CharField(max_length=40, verbose_name="list",
                                help_text="ofac-sdn for the SDN XML; ofac-<ASSET> for a derived address list.")
    source = models.TextField(help_text="The URL or file name it was read from.")
    format = models.CharField(max_length=20, choices=SanctionsListFormat.choices)
    published_at = models.DateTimeField(null=True, blank=True, verbose_name="published",
                                        help_text="The list's own publication date (the XML's date of issue, or "
                                                  "the server's Last-Modified); empty when the source has none.")
    sha256 = models.CharField(max_length=64, verbose_name="SHA-256", help_text="Of the file as downloaded.")
    entry_count = models.IntegerField(verbose_name="entries", help_text="Distinct EVM addresses.")
    previous = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                 help_text="The version of the same list it replaced.")
    added_count = models.IntegerField(default=0, verbose_name="added")
    removed_count = models.IntegerField(default=0, verbose_name="removed")
    notes = models.JSONField(default=list, blank=True, help_text="What the import set aside: other chains' "
                                                                 "addresses, entries skipped when forced.")
    forced = models.BooleanField(default=False, help_text="Imported despite a refusal (shrink or bad addresses).")
    force_reason = models.TextField(blank=True, default="")
    imported_at = models.DateTimeField(db_default=Now(), verbose_name="imported")
    imported_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+", help_text="Empty for the scheduled refresh or a command.")
    imported_by_label = models.CharField(max_length=150, default="", verbose_name="imported by")
    last_seen_at = models.DateTimeField(db_default=Now(), verbose_name="last fetched",
                                        help_text="The last time the source still served this very file.")
    rescreened_at = models.DateTimeField(null=True, blank=True,
                                         help_text="When every known wallet was screened against its new entries.")
    hit_count = models.IntegerField(default=0, verbose_name="our wallets hit")

    class Meta:
        db_table = "sanctions_list_versions"
        ordering = ["-imported_at", "-id"]
        verbose_name = "sanctions list version"
        verbose_name_plural = "sanctions"
        constraints = [
            models.CheckConstraint(condition=Q(sha256__length=64, sha256__regex=r"^[0-9a-f]+$"),
                                   name="sanctions_versions_sha256_hex",
                                   violation_error_message="sha256 must be 64 lower-case hex digits."),
            models.CheckConstraint(condition=Q(entry_count__gte=0, added_count__gte=0, removed_count__gte=0,
                                               hit_count__gte=0), name="sanctions_versions_counts_non_negative"),
            models.CheckConstraint(condition=Q(format__in=SanctionsListFormat.values),
                                   name="sanctions_versions_format_valid"),
            models.CheckConstraint(condition=Q(forced=False) | ~Q(force_reason=""),
                                   name="sanctions_versions_forced_has_reason",
                                   violation_error_message="A forced import needs a reason."),
        ]
        indexes = [models.Index(fields=["list_key", "-imported_at"], name="sanctions_versions_list_idx")]

    def __str__(self) -> str:
        return f"{self.list_key} #{self.pk}"


class SanctionsEntry(models.Model):
    """One EVM address a list version names, with the SDN entry it belongs to where the source says."""

    version = models.ForeignKey(SanctionsListVersion, on_delete=models.PROTECT, related_name="entries")
    address = WalletField(help_text="Canonical lower-case address.")
    assets = ArrayField(models.CharField(max_length=16), default=list,
                        help_text="The list's asset labels for it (ETH, USDT, BSC, ...).")
    sdn_uid = models.BigIntegerField(null=True, blank=True, verbose_name="SDN uid")
    sdn_name = models.TextField(blank=True, default="", verbose_name="SDN name")

    class Meta:
        db_table = "sanctions_entries"
        ordering = ["version", "address"]
        verbose_name_plural = "sanctions entries"
        constraints = [
            models.UniqueConstraint(fields=["version", "address"], name="sanctions_entries_one_per_version"),
            models.CheckConstraint(condition=hex_check("address", 40), name="sanctions_entries_address_canonical"),
        ]
        indexes = [models.Index(fields=["address"], name="sanctions_entry_address_idx")]

    def __str__(self) -> str:
        return f"{self.address} ({self.sdn_name or 'no name'})"


class SanctionsScreeningQuerySet(models.QuerySet):
    def pending(self):
        return self.filter(screened_at__isnull=True)


class SanctionsScreening(models.Model):
    """Every wallet the mirror has met, queued by a trigger on user_profiles and arbitrators the moment it first
    appears (whatever writes those rows), and marked once checked against the lists and an oracle."""

    wallet = WalletField(unique=True)
    chain = models.CharField(max_length=16, blank=True, db_default="", choices=chain_choices,
                             help_text="Where it was first seen (empty: not known): its oracle is asked.")
    queued_at = models.DateTimeField(db_default=Now())
    screened_at = models.DateTimeField(null=True, blank=True)
    oracle_chain = models.CharField(max_length=16, blank=True, db_default="",
                                    help_text="The chain whose oracle was asked (empty: none configured).")
    oracle_block = models.BigIntegerField(null=True, blank=True, help_text="The block the oracle answered at.")
    listed = models.BooleanField(null=True, blank=True, help_text="A list or the oracle named it when screened.")

    objects = SanctionsScreeningQuerySet.as_manager()

    class Meta:
        db_table = "sanctions_screenings"
        ordering = ["queued_at"]
        constraints = [models.CheckConstraint(condition=hex_check("wallet", 40),
                                              name="sanctions_screenings_wallet_canonical")]
        indexes = [models.Index(fields=["queued_at"], name="sanctions_pending_idx",
                                condition=Q(screened_at__isnull=True))]

    def __str__(self) -> str:
        return self.wallet


class SanctionsOracleCheck(models.Model):
    """The oracle's last answer per chain, for the Sanctions page and /metrics."""

    chain = models.CharField(max_length=16, primary_key=True, choices=chain_choices)
    oracle = WalletField(help_text="The contract asked.")
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_block = models.BigIntegerField(null=True, blank=True)
    wallets_checked = models.BigIntegerField(default=0, help_text="Wallets asked about, in total.")
    requests = models.BigIntegerField(default=0, help_text="JSON-RPC requests those took, in total.")
    last_error = models.TextField(blank=True, default="")
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "sanctions_oracle_checks"
        ordering = ["chain"]

    def __str__(self) -> str:
        return f"{self.chain}: {self.oracle}"


class SanctionsHitSource(models.TextChoices):
    LIST = "list", "Sanctions list"
    ORACLE = "oracle", "Sanctions oracle"


class SanctionsHit(models.Model):
    """One of our wallets named by a sanctions list version or an oracle: blacklisted (source sanctions), its
    open orders flagged, and a review flag that says who handled it."""

    wallet = WalletField()
    source = models.CharField(max_length=8, choices=SanctionsHitSource.choices)
    version = models.ForeignKey(SanctionsListVersion, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="hits", help_text="The list version that named it.")
    chain = models.CharField(max_length=16, blank=True, default="", choices=chain_choices,
                             help_text="The oracle's chain (empty for a list hit).")
    oracle = WalletField(null=True, blank=True, help_text="The oracle contract that named it.")
    block = models.BigIntegerField(null=True, blank=True, help_text="The block the oracle answered at.")
    sdn_uid = models.BigIntegerField(null=True, blank=True, verbose_name="SDN uid")
    sdn_name = models.TextField(blank=True, default="", verbose_name="SDN name")
    roles = ArrayField(models.CharField(max_length=10), default=list,
                       help_text="What the wallet is to us: buyer, seller, arbitrator.")
    detected_at = models.DateTimeField(db_default=Now(), verbose_name="detected")
    blacklist = models.ForeignKey(Blacklist, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                  help_text="The blacklist entry made for it (or the one it already had).")
    flag = models.ForeignKey(ReviewFlag, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                             help_text="The review flag staff resolve to say it is handled.")
    open_orders = models.IntegerField(default=0, help_text="Open orders and disputes it was party to when hit.")
    escrowed = models.JSONField(default=dict, blank=True,
                                help_text="Token units escrowed in those orders, by token symbol.")

    class Meta:
        db_table = "sanctions_hits"
        ordering = ["-detected_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["wallet", "version"], condition=Q(source="list"),
                                    name="sanctions_hits_one_per_version"),
            models.UniqueConstraint(fields=["wallet", "chain"], condition=Q(source="oracle"),
                                    name="sanctions_hits_one_per_oracle"),
            models.CheckConstraint(condition=(Q(source="list") & Q(version__isnull=False))
                                   | (Q(source="oracle") & ~Q(chain="") & Q(oracle__isnull=False,
                                                                           block__isnull=False)),
                                   name="sanctions_hits_evidence",
                                   violation_error_message="A list hit names its version; an oracle hit its chain, "
                                                           "oracle and block."),
            models.CheckConstraint(condition=hex_check("wallet", 40), name="sanctions_hits_wallet_canonical"),
        ]
        indexes = [models.Index(fields=["wallet"], name="sanctions_hits_wallet_idx")]

    def __str__(self) -> str:
        return f"{self.wallet} ({self.get_source_display()})"

    @property
    def evidence(self) -> str:
        if self.source == SanctionsHitSource.LIST:
            return f"list {self.version}" + (f", SDN {self.sdn_uid} {self.sdn_name}".rstrip() if self.sdn_uid else "")
        return f"oracle {self.oracle} on {self.chain} at block {self.block}"


class SanctionsHitOrder(models.Model):
    """An open order or dispute a sanctioned wallet was party to when it was hit, as it stood then: flagged for
    review. The order is named by chain and on-chain id (no foreign key: a reorg may replay the order's row)."""

    hit = models.ForeignKey(SanctionsHit, on_delete=models.CASCADE, related_name="orders")
    chain = models.CharField(max_length=16, choices=chain_choices)
    onchain_id = models.BigIntegerField(verbose_name="order id")
    role = models.CharField(max_length=10, help_text="buyer, seller or arbitrator")
    status = models.CharField(max_length=20, help_text="The order's status when the wallet was hit.")
    amount = models.DecimalField(**AMOUNT)
    token_symbol = models.CharField(max_length=16, blank=True, default="")

    class Meta:
        db_table = "sanctions_hit_orders"
        ordering = ["hit", "chain", "onchain_id"]
        constraints = [models.UniqueConstraint(fields=["hit", "chain", "onchain_id", "role"],
                                               name="sanctions_hit_orders_once")]
        indexes = [models.Index(fields=["chain", "onchain_id"], name="sanctions_hit_order_idx")]

    def __str__(self) -> str:
        return f"{self.chain} #{self.onchain_id} ({self.role})"
