"""Admin of the monitoring room: the pause drills (each rehearsal of the automatic pause) and the button to run one."""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.urls import path, reverse

from backoffice.admin_utils import ReadOnlyAdminMixin, admin_page, errors_to_form
from chain.config import configured_chains
from ops.models import DrillRun

from . import drills


class DrillForm(forms.Form):
    chain = forms.ChoiceField(help_text="The chain is forked at the mirror's cursor; nothing touches it.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["chain"].choices = [(c, c) for c in configured_chains()]


@admin.register(DrillRun)
class DrillRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = ("No pause drill yet: “Run a pause drill” forks a chain, drains its escrow there and measures how "
                     "fast the back office pauses it by itself.")
    list_display = ("started_at", "chain", "status", "detect_blocks", "pause_blocks", "pause_seconds", "fork_block",
                    "actor_label")
    list_filter = ("chain", "status")
    readonly_fields = ("chain", "status", "actor_label", "started_at", "finished_at", "fork_block", "drain_block",
                       "detected_block", "paused_block", "detect_blocks", "pause_blocks", "pause_seconds",
                       "steps_text", "error")
    change_list_template = "admin/ops/drillrun/change_list.html"

    @admin.display(description="steps")
    def steps_text(self, obj: DrillRun) -> str:
        return "\n".join(f"{s['at']} (+{s['seconds']} s) {s['text']}" for s in obj.steps)

    def get_urls(self):
        return [path("run/", self.admin_site.admin_view(self.run_view), name="ops_drillrun_run"), *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, {**(extra_context or {}),
                                                 "can_run": request.user.has_perm("ops.run_drillrun")})

    def run_view(self, request):
        if not request.user.has_perm("ops.run_drillrun"):
            raise PermissionDenied
        form = DrillForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                drills.request_pause_drill(actor=request.user, chain=form.cleaned_data["chain"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                self.message_user(request, f"Pause drill of {form.cleaned_data['chain']} queued: it appears here "
                                           "when a worker starts it (a few minutes at most).", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:ops_drillrun_changelist"))
        return admin_page(self, request, "admin/ops/simple_form.html", form=form, title="Run a pause drill",
                          submit="Run the drill (audited)")
