"""Trust and safety records: the wallet blacklist (runbook RB-04)."""
from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from chain.addresses import hex_check
from chain.fields import WalletField
from chain.models import Order

# The longest reason a person types (the form, the import, the service): a paragraph, not a pasted document.
REASON_MAX_LENGTH = 2000


class BlacklistSource(models.TextChoices):
    MANUAL = "manual", "Manual"
    AUTOMATIC = "automatic", "Automatic"
    IMPORT = "import", "Import"


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
                                   violation_error_message="source must be manual, automatic or import."),
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
    role = models.CharField(max_length=10, help_text="seller, buyer, account or velocity (orders created too fast)")
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
