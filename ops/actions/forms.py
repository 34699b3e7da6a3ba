"""Forms of the operations console. Services validate again; these give field-level messages early."""
from __future__ import annotations

from django import forms
from django.conf import settings

from chain.calls import KINDS, PROPOSABLE

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
    kind = forms.ChoiceField(label="action",
                             choices=[(k.key, f"{k.label} — {k.signature}") for k in PROPOSABLE.values()])
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


class ResumeForm(ReasonForm):
    grace_hours = forms.DecimalField(min_value=0, max_value=168, decimal_places=2, required=False,
                                     label="Grace (hours)",
                                     help_text="After the unpause, the timeout keeper leaves alone the orders whose "
                                               "deadline passed during the pause this long (0: no grace; at most "
                                               "168; empty: RESUME_GRACE_SECONDS).")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["grace_hours"].initial = settings.RESUME_GRACE_SECONDS / 3600

    @property
    def grace_seconds(self) -> int:
        hours = self.cleaned_data.get("grace_hours")
        return settings.RESUME_GRACE_SECONDS if hours is None else int(hours * 3600)


class ConfirmForm(forms.Form):
    confirm = forms.BooleanField(required=True, label="I have read the decoded call and the simulation result.")


class ExecuteForm(ConfirmForm):
    acknowledge_effects = forms.BooleanField(
        required=False,
        label="I have read how the state changes now differ from the proposal, and send it all the same.")


class SignatureForm(forms.Form):
    """One signature over an action's typed data: filled by the wallet button, or pasted."""

    signature = forms.CharField(required=False, max_length=200, widget=forms.TextInput(attrs={"size": 70,
                                "placeholder": "0x… (65 bytes: 132 hex digits)", "autocomplete": "off"}),
                                help_text="Filled by “Sign with wallet”, or paste a signature of the typed data "
                                          "made by another tool (e.g. cast wallet sign --data --from-file).")
    source = forms.ChoiceField(required=False, choices=[("", "—"), ("wallet", "wallet"), ("pasted", "pasted")],
                               widget=forms.HiddenInput)


class RegisterKeyForm(forms.Form):
    address = forms.CharField(max_length=42, help_text="The owner address you sign with (0x…).")
    label = forms.CharField(required=False, max_length=100, help_text="Optional: e.g. hardware wallet.")
    challenge = forms.CharField(widget=forms.HiddenInput)
    signature = forms.CharField(max_length=200, widget=forms.TextInput(attrs={"size": 70, "autocomplete": "off"}),
                                help_text="personal_sign of the message above: the wallet button fills it, or "
                                          "paste the output of cast wallet sign \"<message>\".")
