"""Contract actions, the signer's nonce sequence and the platform flags (kill switch)."""
from __future__ import annotations

from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.conf import settings
from django.db import models

from chain.models import chain_choices


class EffectCheck(models.TextChoices):
    """What the chain did, against what the last simulation said it would (compared on confirmation)."""
    AS_SIMULATED = "as_simulated", "Effect as simulated"
    DIFFERS = "differs", "Effect differs"
    UNVERIFIED = "unverified", "Not verified (no fork simulation, or the chain could not be read)"


class ActionStatus(models.TextChoices):
    PROPOSED = "proposed", "Proposed (awaiting approval)"
    APPROVED = "approved", "Approved (awaiting execution)"
    REJECTED = "rejected", "Rejected / blocked"
    SIGNED = "signed", "Signed and recorded"
    SENT = "sent", "Sent (awaiting confirmations)"
    CONFIRMED = "confirmed", "Confirmed"
    FAILED = "failed", "Failed on chain"
    REPLACED = "replaced", "Replaced (same nonce)"
    STALE = "stale", "Stale (Safe nonce used elsewhere)"


class Custody(models.TextChoices):
    """How an action reaches the chain, and so which key (if any) the server uses for it."""
    OWNER_KEY = "owner_key", "Owner key (eoa mode)"
    SAFE = "safe", "Safe multisig (relayer pays gas)"
    GUARDIAN = "guardian", "Guardian module pause (relayer pays gas)"
    KEEPER = "keeper", "Keeper key (public function)"
    GUARDIAN_KEY = "guardian_key", "Server guardian key (automatic pause)"


ACTION_KINDS = [
    ("pause", "pause()"), ("unpause", "unpause()"), ("set_supported_token", "setSupportedToken(address,bool)"),
    ("set_treasury", "setTreasury(address)"), ("set_platform_fee", "setPlatformFeeBps(uint16)"),
    ("set_arbitrator_fee", "setArbitratorFeeBps(uint16)"), ("set_timeouts", "setTimeouts(uint64,uint64,uint64)"),
    ("auto_expire", "autoExpireOrder(uint256)"), ("auto_release", "autoReleaseToSeller(uint256)"),
    ("owner_resolve", "ownerResolveDispute(uint256,bool)"), ("transfer_ownership", "transferOwnership(address)"),
    ("transfer_pool_ownership", "ArbitratorPool.transferOwnership(address)"),
    ("cancel_safe_tx", "Safe: cancel a SafeTx (no call, uses its nonce)"),
]
IN_FLIGHT = (ActionStatus.SIGNED, ActionStatus.SENT)
AWAITING = (ActionStatus.PROPOSED, ActionStatus.APPROVED)  # open, nothing signed yet


class ContractAction(models.Model):
    """One owner transaction with four eyes: proposed → approved → simulated → signed → sent → confirmed.

    The database enforces what matters: the approver differs from the proposer (except an
    immediate pause, runbook RB-05, and rule-bound automation), the calldata cannot change after
    proposal, one original transaction per signer nonce, and one live automatic action per order.
    """

    chain = models.CharField(max_length=16, choices=chain_choices)
    kind = models.CharField(max_length=32, choices=ACTION_KINDS)
    params = models.JSONField(default=dict, blank=True, help_text="Validated parameters.")
    description = models.CharField(max_length=300, help_text="The decoded call.")
    to_address = models.CharField(max_length=42, verbose_name="contract")
    calldata = models.TextField(help_text="Fixed at proposal.")
    calldata_hash = models.CharField(max_length=66, help_text="keccak256 of the calldata, fixed at proposal.")
    reason = models.TextField(help_text="Why; required.")
    status = models.CharField(max_length=12, choices=ActionStatus.choices, default=ActionStatus.PROPOSED)
    is_automatic = models.BooleanField(default=False, help_text="Rule-bound automation (timeouts): no human approval.")
    order_onchain_id = models.BigIntegerField(null=True, blank=True, verbose_name="order id")
    group = models.CharField(max_length=64, blank=True, default="", help_text="Actions proposed together (resume).")
    proposed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    proposed_at = models.DateTimeField(auto_now_add=True)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    approved_at = models.DateTimeField(null=True, blank=True)
    executed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    proposal_simulation = models.JSONField(null=True, blank=True)
    execution_simulation = models.JSONField(null=True, blank=True)
    proposal_effects = models.JSONField(
        null=True, blank=True, help_text="State changes simulated on a fork of the chain at proposal: events, getters, "
        "balances (or, method eth_call, why the fork could not run).")
    execution_effects = models.JSONField(
        null=True, blank=True, help_text="The same, simulated again just before sending, on the transaction sent.")
    effects_differences = models.JSONField(
        default=list, blank=True, help_text="How the state changes before sending differed from those at proposal.")
    effects_acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="The executor who read those differences and sent it all the same.")
    effect_check = models.CharField(max_length=12, choices=EffectCheck.choices, blank=True, default="",
                                    help_text="After confirmation: the receipt and the getters against the simulation.")
    observed_effects = models.JSONField(null=True, blank=True,
                                        help_text="What the executed transaction changed on the chain.")
    effect_check_differences = models.JSONField(default=list, blank=True,
                                                help_text="Simulated versus observed, where they differ.")
    signer_address = models.CharField(max_length=42, blank=True, default="")
    nonce = models.BigIntegerField(null=True, blank=True)
    gas_limit = models.BigIntegerField(null=True, blank=True)
    max_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0, null=True, blank=True)
    max_priority_fee_per_gas = models.DecimalField(max_digits=40, decimal_places=0, null=True, blank=True)
    raw_tx = models.TextField(blank=True, default="", help_text="Signed bytes, recorded before broadcast.")
    # NULL until signed: the unique index on tx_hash skips NULLs, where '' would collide between unsigned actions.
    tx_hash = models.CharField(max_length=66, null=True, blank=True)  # noqa: DJ001
    signed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    receipt_block = models.BigIntegerField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True, default="", help_text="Revert reason, failure or replacement note.")
    replaces = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT,
                                 related_name="replacements",
                                 help_text="The original action whose nonce this replacement reuses.")
    custody = models.CharField(max_length=12, choices=Custody.choices, default=Custody.OWNER_KEY,
                               help_text="How it is sent: owner key, Safe, guardian module or keeper key.")
    safe_address = models.CharField(max_length=42, blank=True, default="", help_text="The Safe that makes the call.")
    safe_nonce = models.BigIntegerField(null=True, blank=True,
                                        help_text="The Safe's nonce this SafeTx uses (or the guardian module's).")
    typed_data = models.JSONField(null=True, blank=True,
                                  help_text="The EIP-712 payload the signers sign, fixed when the action is built.")
    signing_hash = models.CharField(max_length=66, blank=True, default="",
                                    help_text="EIP-712 hash of the typed data (the SafeTx hash), fixed with it.")
    tx_to = models.CharField(max_length=42, blank=True, default="",
                             help_text="Where the sent transaction goes: the contract, the Safe or the module.")
    tx_data = models.TextField(blank=True, default="",
                               help_text="The sent transaction's calldata (execTransaction with the signatures).")

    class Meta:
        db_table = "ops_contract_actions"
        ordering = ["-proposed_at"]
        verbose_name = "contract action"
        permissions = [("approve_contractaction", "Can approve or reject contract actions"),
                       ("execute_contractaction", "Can execute approved contract actions")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(approved_by__isnull=True) | ~models.Q(approved_by=models.F("proposed_by"))
                | models.Q(kind="pause"),
                name="contract_actions_four_eyes",
                violation_error_message="The approver must be a different person from the proposer."),
            models.CheckConstraint(
                condition=~models.Q(status__in=["approved", "signed", "sent", "confirmed", "failed", "replaced"])
                | models.Q(approved_by__isnull=False) | models.Q(is_automatic=True),
                name="contract_actions_approved_before_signing"),
            models.CheckConstraint(
                condition=models.Q(is_automatic=False) | models.Q(kind__in=["auto_expire", "auto_release"])
                | models.Q(kind="pause", custody__in=["guardian_key", "owner_key"]),
                name="contract_actions_automation_is_rule_bound",
                violation_error_message="Only auto-expire, auto-release and the automatic pause may run without a "
                                        "human."),
            models.CheckConstraint(
                condition=~models.Q(custody="guardian_key") | models.Q(kind="pause", is_automatic=True),
                name="contract_actions_guardian_key_pauses_only",
                violation_error_message="The server's guardian key only pauses, and only automatically."),
            # One automatic pause in flight per chain: two triggers in one run, or two workers, send one.
            models.UniqueConstraint(fields=["chain"],
                                    condition=models.Q(kind="pause", is_automatic=True,
                                                       status__in=["proposed", "approved", "signed", "sent"]),
                                    name="contract_actions_one_open_auto_pause"),
            models.CheckConstraint(
                condition=models.Q(is_automatic=True) | models.Q(proposed_by__isnull=False),
                name="contract_actions_proposer_required"),
            models.CheckConstraint(condition=~models.Q(reason=""), name="contract_actions_reason_required",
                                   violation_error_message="A reason is required."),
            models.CheckConstraint(
                condition=~models.Q(status__in=["signed", "sent", "confirmed", "failed", "replaced"])
                | (models.Q(nonce__isnull=False) & models.Q(tx_hash__isnull=False) & ~models.Q(raw_tx="")),
                name="contract_actions_recorded_before_broadcast"),
            models.UniqueConstraint(fields=["tx_hash"], condition=models.Q(tx_hash__isnull=False),
                                    name="contract_actions_tx_hash_uniq"),
            models.UniqueConstraint(fields=["chain", "signer_address", "nonce"],
                                    condition=models.Q(nonce__isnull=False, replaces__isnull=True),
                                    name="contract_actions_one_original_per_nonce"),
            models.UniqueConstraint(fields=["replaces"], condition=models.Q(status__in=["proposed", "approved"]),
                                    name="contract_actions_one_pending_replacement"),
            # One open action per SafeTx (its replacements, only the relayer's fee raised, share the hash):
            # a second would gather owners' signatures on the same hash outside the first one's review. Guardian
            # pauses are not SafeTxs: two in one block share a hash, and both may wait for a guardian.
            models.UniqueConstraint(fields=["signing_hash"],
                                    condition=models.Q(custody="safe", status__in=["proposed", "approved", "signed",
                                                                                   "sent"], replaces__isnull=True)
                                    & ~models.Q(signing_hash=""),
                                    name="contract_actions_one_open_per_safe_tx",
                                    violation_error_message="This SafeTx already has an open action."),
            models.UniqueConstraint(fields=["chain", "kind", "order_onchain_id"],
                                    condition=models.Q(is_automatic=True)
                                    & ~models.Q(status__in=["rejected", "failed"]),
                                    name="contract_actions_automatic_once_per_order"),
            models.CheckConstraint(
                condition=~models.Q(custody__in=["safe", "guardian"])
                | (models.Q(safe_nonce__isnull=False) & ~models.Q(signing_hash="")
                   & models.Q(typed_data__isnull=False)),
                name="contract_actions_signed_payload_fixed",
                violation_error_message="A Safe or guardian action needs its nonce, typed data and hash."),
            models.CheckConstraint(
                condition=~models.Q(custody="keeper") | models.Q(kind__in=["auto_expire", "auto_release"]),
                name="contract_actions_keeper_public_only",
                violation_error_message="The keeper key only calls the public timeout functions."),
            models.CheckConstraint(
                condition=~models.Q(custody="guardian") | models.Q(kind="pause"),
                name="contract_actions_guardian_pause_only",
                violation_error_message="The guardian module can only pause."),
        ]
        indexes = [models.Index(fields=["status", "chain"], name="contract_actions_status_idx")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.chain} {self.description}"

    @property
    def guardian_deadline_seconds(self) -> int | None:
        """When a guardian's pause signature stops being accepted, in block time (unix seconds: the module compares
        it with block.timestamp)."""
        message = (self.typed_data or {}).get("message", {})
        deadline = message.get("deadline") if self.custody == Custody.GUARDIAN else None
        return int(deadline) if deadline is not None else None

    @property
    def guardian_deadline(self) -> datetime | None:
        """The same as a UTC time, to show."""
        seconds = self.guardian_deadline_seconds
        return datetime.fromtimestamp(seconds, tz=dt_timezone.utc) if seconds is not None else None


class SignerNonce(models.Model):
    """The next nonce of a signer on a chain: allocated under a row lock, so the sequence has no gaps."""

    chain = models.CharField(max_length=16)
    address = models.CharField(max_length=42)
    next_nonce = models.BigIntegerField()

    class Meta:
        db_table = "ops_signer_nonces"
        constraints = [models.UniqueConstraint(fields=["chain", "address"], name="ops_signer_nonces_uniq")]

    def __str__(self) -> str:
        return f"{self.chain} {self.address} next {self.next_nonce}"


class PlatformFlag(models.Model):
    """A platform switch or risk threshold (the swap runbook's kill switch), changed only through services."""

    key = models.CharField(max_length=64, unique=True)
    value = models.JSONField()
    description = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")

    class Meta:
        db_table = "ops_platform_flags"
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} = {self.value}"

    @classmethod
    def get(cls, key: str, default=None):
        """The flag's value, or `default` when it was never set (a stored 0 or false is a value)."""
        value = cls.objects.filter(key=key).values_list("value", flat=True).first()
        return default if value is None else value


class AutoPauseTrigger(models.TextChoices):
    """The certain triggers of the automatic pause (RB-05): each holds only at confirmation depth and again at a
    later block."""
    INSOLVENT = "escrow-insolvent", "Escrow holds less than its open orders"
    SETTINGS = "settings-changed", "Escrow settings changed with no back-office action"
    CUSTODY = "custody-changed", "Safe owners, threshold, modules or guard changed outside the back office"
    UNKNOWN_MODULE = "unknown-module", "An unknown module is enabled on the Safe"


class AutoPauseSwitch(models.Model):
    """A trigger staff switched off (or on again) for one chain; no row: on. Changed only through
    `set_auto_pause_trigger` (audited)."""
    chain = models.CharField(max_length=16, choices=chain_choices)
    trigger = models.CharField(max_length=32, choices=AutoPauseTrigger.choices)
    enabled = models.BooleanField(default=True)
    reason = models.TextField(help_text="Why it was switched.")
    updated_at = models.DateTimeField(auto_now=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")

    class Meta:
        db_table = "ops_auto_pause_switches"
        ordering = ["chain", "trigger"]
        verbose_name = "automatic pause trigger"
        constraints = [models.UniqueConstraint(fields=["chain", "trigger"], name="ops_auto_pause_switch_uniq"),
                       models.CheckConstraint(condition=~models.Q(reason=""), name="ops_auto_pause_switch_reason")]

    def __str__(self) -> str:
        return f"{self.chain} {self.trigger}: {'on' if self.enabled else 'off'}"


class TimeoutGraceQuerySet(models.QuerySet):
    def holding(self, now: datetime):
        """Graces that hold orders off now: waiting for their unpause, or not yet ended."""
        return self.filter(models.Q(ends_at__isnull=True) | models.Q(ends_at__gt=now))


class TimeoutGrace(models.Model):
    """A grace after a pause (issue 24, item 4): orders whose seller or buyer deadline fell inside the pause
    [paused_at, unpaused_at] are left alone by the timeout keeper until `ends_at` (unpaused_at + grace), so their
    parties get to act before anything expires or releases. Requested with the resume (audited); the unpause's
    time comes from the mirror's Unpaused event, whoever sent it. Until then the window is open-ended: every order
    whose deadline passed since the pause is held (also between the unpause being mined and the sync seeing it).
    """
    chain = models.CharField(max_length=16, choices=chain_choices)
    group = models.CharField(max_length=40, help_text="The resume request it was asked with.")
    grace_seconds = models.PositiveIntegerField(help_text="How long after the unpause the held orders are left "
                                                          "alone.")
    paused_at = models.DateTimeField(help_text="When the pause began (the escrow's Paused event): deadlines from "
                                               "here on are held.")
    unpaused_at = models.DateTimeField(null=True, blank=True, help_text="When the escrow was unpaused (its Unpaused "
                                                                       "event); empty while still paused.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="unpaused_at + the grace: the keeper acts on "
                                                                   "the held orders from then on.")
    orders_at_request = models.IntegerField(default=0, help_text="Orders whose deadline had passed during the pause "
                                                                 "when the resume was requested.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TimeoutGraceQuerySet.as_manager()

    class Meta:
        db_table = "ops_timeout_graces"
        ordering = ["-created_at"]
        verbose_name = "timeout grace after a pause"
        constraints = [
            models.UniqueConstraint(fields=["chain", "group"], name="ops_timeout_grace_request_uniq"),
            # One grace waits for a chain's unpause at a time: a later resume request replaces its grace.
            models.UniqueConstraint(fields=["chain"], condition=models.Q(unpaused_at__isnull=True),
                                    name="ops_timeout_grace_one_pending"),
            models.CheckConstraint(condition=models.Q(grace_seconds__gt=0, grace_seconds__lte=7 * 86400),
                                   name="ops_timeout_grace_seconds_range"),
            models.CheckConstraint(condition=models.Q(unpaused_at__isnull=True, ends_at__isnull=True)
                                   | models.Q(unpaused_at__gte=models.F("paused_at"),
                                              ends_at=models.F("unpaused_at") + models.F("grace_seconds")
                                              * timedelta(seconds=1)),
                                   name="ops_timeout_grace_window"),
        ]

    def __str__(self) -> str:
        return f"{self.chain} grace {self.grace_seconds}s after the pause of {self.paused_at:%Y-%m-%d %H:%M}"
