"""Forms for trust and safety staff; validation mirrors the services (which re-check)."""
from __future__ import annotations

from django import forms
from django.utils import timezone

from chain.fields import WalletFormField

from .models import REASON_MAX_LENGTH, STAFF_SOURCES, Blacklist, BlacklistSource


class BlacklistAddForm(forms.ModelForm):
    wallet = WalletFormField()
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=REASON_MAX_LENGTH,
                             help_text="Required. Shown to every reviewer and written to the audit log.")
    source = forms.ChoiceField(choices=[(s.value, s.label) for s in STAFF_SOURCES], initial=BlacklistSource.MANUAL)

    class Meta:
        model = Blacklist
        fields = ("wallet", "reason", "source", "expires_at", "order")

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required: say why this wallet is blacklisted.")
        return reason

    def clean_expires_at(self):
        value = self.cleaned_data.get("expires_at")
        if value is not None and value <= timezone.now():
            raise forms.ValidationError("The expiry is in the past: leave it empty or pick a future time (UTC).")
        return value

    def clean_wallet(self):
        wallet = self.cleaned_data["wallet"]
        if Blacklist.objects.active().filter(wallet=wallet).exists():
            raise forms.ValidationError(f"{wallet} is already blacklisted: lift the active entry first.")
        return wallet

    def validate_constraints(self, exclude=None):
        # The unique-active constraint is checked in clean_wallet with a clearer message.
        return


class LiftForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             help_text="Required: why the blacklisting is lifted.")

    def clean_reason(self):
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required to lift a blacklisting.")
        return reason
