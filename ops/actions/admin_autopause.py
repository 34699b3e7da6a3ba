"""Admin of the automatic pause: each chain's triggers, whether they act, and switching one off or on (audited)."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path, reverse

from backoffice.admin_utils import ReadOnlyAdminMixin, admin_page, errors_to_form
from chain.config import configured_chains, get_chain_config
from chain.transactions import has_key
from ops.models import AutoPauseSwitch, AutoPauseTrigger

from . import autopause


class SwitchForm(forms.Form):
    chain = forms.CharField(widget=forms.HiddenInput)
    trigger = forms.ChoiceField(choices=AutoPauseTrigger.choices, widget=forms.HiddenInput)
    enabled = forms.BooleanField(required=False, widget=forms.HiddenInput)
    reason = forms.CharField(max_length=500, help_text="Why this trigger must (or may again) pause the chain.")


@admin.register(AutoPauseSwitch)
class AutoPauseSwitchAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Over the list of switched triggers (a trigger nobody switched has no row: it is on), every configured
    chain's triggers and whether each acts, with the switch for ops admins."""
    change_list_template = "admin/ops/autopauseswitch/change_list.html"
    empty_message = "No trigger was ever switched: every trigger of every chain acts where its automatic pause is on."
    list_display = ("chain", "trigger", "enabled", "updated_at", "updated_by", "reason")
    list_filter = ("chain", "trigger", "enabled")
    list_select_related = ("updated_by",)

    def get_urls(self):
        return [path("switch/", self.admin_site.admin_view(self.switch_view), name="ops_autopauseswitch_switch"),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        chains = []
        if self.has_view_permission(request):
            switched = {(s.chain, s.trigger): s for s in AutoPauseSwitch.objects.select_related("updated_by")}
            for chain in configured_chains():
                cfg = get_chain_config(chain)
                rows = [{"trigger": trigger, "label": label, "switch": switched.get((chain, trigger)),
                         "on": autopause.trigger_enabled(chain, trigger)}
                        for trigger, label in AutoPauseTrigger.choices]
                chains.append({"chain": chain, "auto_pause": cfg.auto_pause, "safe": cfg.is_safe,
                               "key": "GUARDIAN_KEY" if cfg.is_safe else "OWNER_KEY",
                               "has_key": has_key("guardian" if cfg.is_safe else "owner"),
                               "module": cfg.guardian_module, "rows": rows,
                               "variable": f"{chain.upper()[:3]}_AUTO_PAUSE"})
        return super().changelist_view(request, {**(extra_context or {}), "chains": chains,
                                                 "can_switch": request.user.has_perm("ops.change_autopauseswitch")})

    def switch_view(self, request):
        if not request.user.has_perm("ops.change_autopauseswitch"):
            raise PermissionDenied
        form = SwitchForm(request.POST or None, initial=request.GET.dict())
        if request.method == "POST" and form.is_valid():
            try:
                autopause.set_auto_pause_trigger(actor=request.user, **form.cleaned_data)
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                data = form.cleaned_data
                self.message_user(request, f"{data['chain']}: {AutoPauseTrigger(data['trigger']).label} — automatic "
                                           f"pause {'on' if data['enabled'] else 'off'}.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:ops_autopauseswitch_changelist"))
        trigger = form["trigger"].value()
        what = AutoPauseTrigger(trigger).label if trigger in AutoPauseTrigger.values else ""
        return admin_page(self, request, "admin/ops/simple_form.html", form=form,
                          title=f"Switch the automatic pause for {form['chain'].value()}: {what}",
                          submit="Switch (audited)")
