"""Custody records: staff members' own signing addresses, and the signatures they give contract actions."""
from __future__ import annotations

from django.conf import settings
from django.db import models

from chain.addresses import hex_check


class StaffSigningKey(models.Model):
    """An address a staff member proved they control by signing a challenge. The key never reaches us.

    A Safe owner's signature counts for a person only through this link, so four eyes mean two
    people, not two keys: one address belongs to one user, and one user signs an action once.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="signing_keys")
    address = models.CharField(max_length=42, unique=True, help_text="Lower-case 0x address (the Safe owner).")
    label = models.CharField(max_length=100, blank=True, default="", help_text="e.g. hardware wallet, laptop.")
    challenge = models.TextField(help_text="The exact message that was signed.")
    signature = models.CharField(max_length=132, help_text="The personal_sign signature of the challenge.")
    registered_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, help_text="Set when the key is withdrawn.")

    class Meta:
        db_table = "ops_staff_signing_keys"
        ordering = ["user__username", "address"]
        verbose_name = "staff signing key"
        constraints = [models.CheckConstraint(condition=hex_check("address", 40),
                                              name="staff_signing_keys_address_hex")]

    def __str__(self) -> str:
        return f"{self.address} ({self.user.get_username()})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class SignatureSource(models.TextChoices):
    WALLET = "wallet", "Browser wallet"
    KEYSTORE = "keystore", "Keystore (manage.py)"
    PASTED = "pasted", "Pasted"


class ActionSignature(models.Model):
    """One staff member's signature over an action's typed data (a SafeTx, or a guardian's pause)."""

    action = models.ForeignKey("ops.ContractAction", on_delete=models.PROTECT, related_name="signatures")
    signer_address = models.CharField(max_length=42, help_text="The address the signature recovers to.")
    signed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signature = models.CharField(max_length=132, help_text="65 bytes r‖s‖v, hex.")
    source = models.CharField(max_length=12, choices=SignatureSource.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "ops_action_signatures"
        ordering = ["created_at"]
        constraints = [
            models.UniqueConstraint(fields=["action", "signer_address"], name="action_signatures_one_per_address"),
            models.UniqueConstraint(fields=["action", "signed_by"], name="action_signatures_one_per_person"),
            models.CheckConstraint(condition=hex_check("signer_address", 40), name="action_signatures_address_hex"),
            models.CheckConstraint(condition=hex_check("signature", 130), name="action_signatures_signature_hex"),
        ]

    def __str__(self) -> str:
        return f"{self.signer_address} on #{self.action_id}"
