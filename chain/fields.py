"""Model and form fields for EVM data: wallets are stored lower-case, validated with EIP-55 on input."""
from __future__ import annotations

from django import forms
from django.db import models

from .addresses import canonical_tx_hash, canonical_wallet


class WalletFormField(forms.CharField):
    """Accepts an address in any case; mixed case must pass the EIP-55 checksum."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", 42)
        kwargs.setdefault("help_text", "0x followed by 40 hex digits; checksummed (EIP-55) or lower case.")
        super().__init__(**kwargs)

    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return value
        from django.core.exceptions import ValidationError

        try:
            return canonical_wallet(value)
        except ValidationError as exc:
            raise ValidationError(list(exc.message_dict.values())[0]) from None


class WalletField(models.CharField):
    """An EVM address, always stored in canonical lower-case form (CHECK constraint + trigger)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 42)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if kwargs.get("max_length") == 42:
            del kwargs["max_length"]
        return name, path, args, kwargs

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if isinstance(value, str):
            return value.strip().lower()
        return value

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": WalletFormField, **kwargs})


class TxHashFormField(forms.CharField):
    def clean(self, value):
        value = super().clean(value)
        if value in self.empty_values:
            return value
        from django.core.exceptions import ValidationError

        try:
            return canonical_tx_hash(value)
        except ValidationError as exc:
            raise ValidationError(list(exc.message_dict.values())[0]) from None


class TxHashField(models.CharField):
    """A 32-byte hash (transaction or block), stored lower-case."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("max_length", 66)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        if kwargs.get("max_length") == 66:
            del kwargs["max_length"]
        return name, path, args, kwargs

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return value.strip().lower() if isinstance(value, str) else value

    def formfield(self, **kwargs):
        return super().formfield(**{"form_class": TxHashFormField, **kwargs})
