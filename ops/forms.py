"""Forms of the operations console. Services validate again; these give field-level messages early."""
from __future__ import annotations

from django import forms
from django.conf import settings

from chain.calls import KINDS

PARAM_FIELDS = {
    "token": forms.CharField(required=False, max_length=42, help_text="setSupportedToken: ERC-20 address."),
    "supported": forms.ChoiceField(required=False, choices=[("", "—"), ("true", "true"), ("false", "false")],
                                   help_text="setSupportedToken: accept (true) or stop (false)."),
    "treasury": forms.CharField(required=False, max_length=42, help_text="setTreasury: the new treasury (multisig)."),
    "bps": forms.CharField(required=False, max_length=6, help_text="Fee setters: basis points (100 = 1%)."),
    "seller_timeout": forms.CharField(required=False, max_length=12, help_text="setTimeouts: seconds."),
    "buyer_timeout": forms.CharField(required=False, max_length=12, help_text="setTimeouts: seconds."),
    "dispute_timeout": forms.CharField(required=False, max_length=12, help_text="setTimeouts: seconds."),
    "order_id": forms.CharField(required=False, max_length=20, help_text="Order actions: the on-chain order id."),
    "favor_buyer": forms.ChoiceField(required=False, choices=[("", "—"), ("true", "buyer"), ("false", "seller")],
                                     help_text="ownerResolveDispute: who wins."),
}


class ProposeActionForm(forms.Form):
    chain = forms.ChoiceField(choices=[])
    kind = forms.ChoiceField(label="action", choices=[(k.key, f"{k.label} — {k.signature}") for k in KINDS.values()])
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Required: why this call is needed (it is written to the audit log).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["chain"].choices = [(k, v["name"]) for k, v in settings.CHAINS.items()]
        for name, field in PARAM_FIELDS.items():
            self.fields[name] = field

    def action_params(self) -> dict:
        spec = KINDS[self.cleaned_data["kind"]]
        return {p.name: self.cleaned_data.get(p.name, "") for p in spec.params}


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Required; written to the audit log.")


class ConfirmForm(forms.Form):
    confirm = forms.BooleanField(required=True, label="I have read the decoded call and the simulation result.")
