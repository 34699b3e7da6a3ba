"""Admin of contract actions: propose, approve, execute and replace through confirmation pages that show
the decoded call and a fresh simulation; contract status per chain; emergency stop and resume."""
from __future__ import annotations

import json

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from backoffice.admin_utils import CappedCountPaginator, admin_page, errors_to_form, export_csv_action, hex_cell
from backoffice.security import stepup_required
from chain import devwallet, effects
from chain import safe as chain_safe
from chain.config import configured_chains, get_chain_config
from chain.models import ChainState
from chain.rpc import ProviderUnavailable, RpcError
from chain.status import read_contract_status
from ops.models import AWAITING, IN_FLIGHT, ActionStatus, ContractAction, Custody, PlatformFlag, SignatureSource

from . import impact
from . import services as actions
from .forms import ConfirmForm, ExecuteForm, ProposeActionForm, ReasonForm, ResumeForm, SignatureForm
from .selectors import custody_status, effects_summary, present_effects, signing_summary


def _hours(request) -> int:
    """The pause length the impact is read for (?hours=, 1 to 720; 24 by default)."""
    try:
        return min(max(int(request.GET.get("hours", 24)), 1), 720)
    except ValueError:
        return 24


def _paused_chains(chains) -> list[str]:
    """The chains the mirror (or the contracts check) last saw paused, or with an unpause waiting."""
    waiting = set(ContractAction.objects.filter(kind="unpause", status__in=[*AWAITING, *IN_FLIGHT])
                  .values_list("chain", flat=True))
    paused = set(ChainState.objects.filter(paused=True).values_list("chain", flat=True))
    return [c for c in chains if c in paused | waiting]


def _fresh_simulation(action: ContractAction) -> dict:
    return actions.simulate_action(action)


def _may_sign(user, action: ContractAction) -> bool:
    if action.custody == Custody.GUARDIAN:
        return user.has_perm("ops.execute_contractaction")
    return user.has_perm("ops.approve_contractaction") or action.proposed_by_id == user.pk


def _signed_message(action: ContractAction) -> str:
    if action.status in IN_FLIGHT:
        return f"#{action.pk} signed and sent by the relayer: {action.tx_hash}."
    if action.status == ActionStatus.APPROVED:
        return f"#{action.pk}: the signatures reach the Safe's threshold. An operator can now execute it."
    if action.status == ActionStatus.REJECTED:
        return f"#{action.pk} blocked: {action.outcome}"
    return f"#{action.pk}: signature recorded; more are needed before it can execute."


# What "Execute" does, per custody route: staff must know which key signs before it is irreversible.
EXECUTE_WARNING = {
    Custody.OWNER_KEY: "This signs with the server's owner key (eoa mode) and broadcasts. It cannot be undone.",
    Custody.SAFE: "The relayer sends the Safe's execTransaction with the owners' signatures (the relayer only pays "
                  "gas). It cannot be undone.",
    Custody.GUARDIAN: "The relayer sends the guardian's pause signature to the guardian module. It cannot be undone.",
    Custody.KEEPER: "The keeper key sends this public timeout call. It cannot be undone.",
}
CANCEL_WARNING = ("Rejecting a SafeTx here does not void its owners' signatures: whoever holds enough of them can "
                  "still execute it on chain until its Safe nonce is used. This proposes a SafeTx to the Safe itself "
                  "that does nothing, on the same nonce; once the owners sign it and it executes, the rejected one "
                  "can never execute. Any other action executed on that nonce has the same effect.")


@admin.register(ContractAction)
class ContractActionAdmin(admin.ModelAdmin):
    empty_message = "No contract action yet: “Propose an action…” above, or “Emergency stop…” to pause trading (RB-05)."
    list_display = ("id", "chain", "description", "status", "custody", "is_automatic", "proposed_by", "approved_by",
                    "tx_link", "proposed_at")
    list_filter = ("status", "chain", "kind", "custody", "is_automatic", ("proposed_at", admin.DateFieldListFilter))
    list_select_related = ("proposed_by", "approved_by")
    search_fields = ("=tx_hash", "=order_onchain_id", "=calldata_hash", "=group")
    search_help_text = "Exact: a tx hash, an order id, a calldata hash or a group."
    paginator = CappedCountPaginator
    show_full_result_count = False
    change_form_template = "admin/ops/contractaction/change_form.html"
    change_list_template = "admin/ops/contractaction/change_list.html"
    actions = [export_csv_action(["id", "chain", "kind", "description", "status", "reason", "proposed_at",
                                  "approved_at", "nonce", "tx_hash", "outcome"], "contract_actions.csv")]

    def has_add_permission(self, request) -> bool:
        return False  # proposals go through the propose page

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_view_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("ops.view_contractaction")

    @admin.display(description="tx")
    def tx_link(self, obj: ContractAction) -> str:
        return hex_cell(obj.tx_hash)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("propose/", wrap(self.propose_view), name="ops_contractaction_propose"),
            path("<int:pk>/approve/", wrap(self.approve_view), name="ops_contractaction_approve"),
            path("<int:pk>/reject/", wrap(self.reject_view), name="ops_contractaction_reject"),
            path("<int:pk>/execute/", wrap(self.execute_view), name="ops_contractaction_execute"),
            path("<int:pk>/replace/", wrap(self.replace_view), name="ops_contractaction_replace"),
            path("<int:pk>/cancel-on-chain/", wrap(self.cancel_view), name="ops_contractaction_cancel"),
            path("<int:pk>/sign/", wrap(self.sign_view), name="ops_contractaction_sign"),
            path("<int:pk>/typed-data.json", wrap(self.typed_data_view), name="ops_contractaction_typed_data"),
            path("sign-group/<str:group>/", wrap(self.sign_group_view), name="ops_contractaction_sign_group"),
            path("dev-wallet/", wrap(self.dev_wallet_view), name="ops_contractaction_dev_wallet"),
            path("status/<str:chain>/", wrap(self.status_view), name="ops_contractaction_status"),
            path("emergency-stop/", wrap(self.emergency_stop_view), name="ops_contractaction_emergency_stop"),
            path("resume/", wrap(self.resume_view), name="ops_contractaction_resume"),
            *super().get_urls(),
        ]

    # ------------------------------------------------------------------ helpers
    def _done(self, request, action: ContractAction, message: str, level=messages.SUCCESS):
        self.message_user(request, message, level)
        return HttpResponseRedirect(reverse("admin:ops_contractaction_change", args=[action.pk]))

    def changelist_view(self, request, extra_context=None):
        extra = {"chains": list(self._chains()), "trades_enabled": PlatformFlag.get("TRADES_ENABLED")}
        return super().changelist_view(request, {**(extra_context or {}), **extra})

    def change_view(self, request, object_id, form_url="", extra_context=None):
        action = get_object_or_404(ContractAction, pk=object_id)
        user = request.user
        signed = action.custody in (Custody.SAFE, Custody.GUARDIAN)
        signing = signing_summary(action) if signed else None
        can = {
            "approve": not signed and action.status == ActionStatus.PROPOSED
            and user.has_perm("ops.approve_contractaction") and action.proposed_by_id != user.pk,
            "sign": signed and action.status in AWAITING and _may_sign(user, action),
            "reject": action.status in AWAITING
            and user.has_perm("ops.approve_contractaction"),
            "execute": action.status == ActionStatus.APPROVED and user.has_perm("ops.execute_contractaction"),
            "replace": action.status in IN_FLIGHT
            and user.has_perm("ops.add_contractaction"),
            "cancel": bool(signing and signing["exposed"]) and action.kind != "cancel_safe_tx"
            and user.has_perm("ops.add_contractaction")
            and not any(c.status in (*AWAITING, *IN_FLIGHT) for c in signing["cancels"]),
        }
        # Before a pause is sent: what it holds; before an unpause: what it releases at once, and the grace.
        extra = {}
        if action.kind == "pause" and action.status in (*AWAITING, *IN_FLIGHT):
            extra["pause_impact"] = impact.pause_impact(action.chain, hours=_hours(request))
        if action.kind == "unpause" and action.status in (*AWAITING, *IN_FLIGHT):
            extra["unpause_release"] = impact.unpause_release(action.chain)
            extra["graces"] = impact.open_graces(action.chain)
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "can": can,
                                                                   "action_obj": action, "signing": signing,
                                                                   "fx": effects_summary(action), **extra})

    @staticmethod
    def _chains():
        return configured_chains()

    # ------------------------------------------------------------------ views
    def propose_view(self, request):
        if not request.user.has_perm("ops.add_contractaction"):
            raise PermissionDenied
        form = ProposeActionForm(request.POST or None, initial=request.GET.dict() or None)
        if request.method == "POST" and form.is_valid():
            try:
                action = actions.propose_contract_action(
                    actor=request.user, chain=form.cleaned_data["chain"], kind=form.cleaned_data["kind"],
                    params=form.action_params(), reason=form.cleaned_data["reason"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                then = ("the Safe's owners now sign it (Sign…)" if action.custody == Custody.SAFE
                        else "a different person must approve it")
                return self._done(request, action, f"Proposed #{action.pk}: {action.description}. The simulation "
                                                   f"passed; {then}.")
        return admin_page(self, request, "admin/ops/contractaction/propose.html", title="Propose a contract action",
                          form=form)

    def _confirm(self, request, action: ContractAction, *, verb: str, perm: str, run, form_class=ConfirmForm,
                 warning: str = "", **extra):
        if not request.user.has_perm(perm):
            raise PermissionDenied
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                return run(form)
            except ValidationError as exc:
                errors_to_form(form, exc)
        return admin_page(self, request, "admin/ops/contractaction/confirm.html", title=f"{verb.capitalize()} action "
                          f"#{action.pk}", action_obj=action, verb=verb, form=form, warning=warning,
                          simulation=_fresh_simulation(action) if action.status in AWAITING else None, **extra)

    def approve_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)

        def run(form):
            done = actions.approve_contract_action(actor=request.user, action=action)
            return self._done(request, done, f"Approved #{done.pk}. An operator can now execute it.")
        return self._confirm(request, action, verb="approve", perm="ops.approve_contractaction", run=run)

    def reject_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)

        def run(form):
            done = actions.reject_contract_action(actor=request.user, action=action, reason=form.cleaned_data["reason"])
            return self._done(request, done, f"Rejected #{done.pk}.", messages.WARNING)
        return self._confirm(request, action, verb="reject", perm="ops.approve_contractaction", run=run,
                             form_class=ReasonForm)

    @stepup_required
    def execute_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)

        def run(form):
            done = actions.execute_contract_action(actor=request.user, action=action,
                                                   acknowledge_effects=form.cleaned_data["acknowledge_effects"])
            if done.status == ActionStatus.REJECTED:
                return self._done(request, done, f"Blocked: {done.outcome}. Nothing was signed.", messages.ERROR)
            if done.status == ActionStatus.SIGNED:
                return self._done(request, done, f"Signed (nonce {done.nonce}); the broadcast failed and will be "
                                                 "retried with the same bytes.", messages.WARNING)
            return self._done(request, done, f"Sent {done.tx_hash}. It is confirmed after "
                                             f"{get_chain_config(done.chain).confirmations} blocks.")
        # What the call changes now, on a fork, against the proposal's: the executor sees a difference before
        # sending (the service refuses it again, unacknowledged, with the transaction actually sent).
        preview = actions.preview_effects(action) if action.status == ActionStatus.APPROVED else None
        return self._confirm(request, action, verb="execute", perm="ops.execute_contractaction", run=run,
                             form_class=ExecuteForm, warning=EXECUTE_WARNING[action.custody],
                             preview=present_effects(preview), action_effects=effects_summary(action),
                             preview_differences=effects.differences(action.proposal_effects, preview))

    def replace_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)

        def run(form):
            done = actions.replace_contract_action(actor=request.user, action=action,
                                                   reason=form.cleaned_data["reason"])
            if done.status == ActionStatus.APPROVED:
                return self._done(request, done, f"Replacement #{done.pk} for nonce {action.nonce}: the same signed "
                                                 "transaction, ready to execute with fees raised by at least 12.5%.")
            return self._done(request, done, f"Replacement #{done.pk} proposed for nonce {action.nonce}; it needs "
                                             "approval, then executes with fees raised by at least 12.5%.")
        return self._confirm(request, action, verb="replace", perm="ops.add_contractaction", run=run,
                             form_class=ReasonForm)

    def cancel_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)

        def run(form):
            cancel = actions.propose_safe_tx_cancel(actor=request.user, action=action,
                                                    reason=form.cleaned_data["reason"])
            return self._done(request, cancel, f"Proposed #{cancel.pk}: a SafeTx that does nothing on Safe nonce "
                                               f"{cancel.safe_nonce}. Once the owners sign and it executes, "
                                               f"#{action.pk} can never execute.")
        return self._confirm(request, action, verb="cancel on chain", perm="ops.add_contractaction", run=run,
                             form_class=ReasonForm, warning=CANCEL_WARNING)

    def typed_data_view(self, request, pk: int):
        """The EIP-712 payload as a file, for `cast wallet sign --data --from-file` or any other signer."""
        action = get_object_or_404(ContractAction, pk=pk)
        if not request.user.has_perm("ops.view_contractaction"):
            raise PermissionDenied
        if not action.typed_data:
            return self._done(request, action, f"#{action.pk} is sent with the server's key: it has no typed data "
                                               "to sign.", messages.INFO)
        response = JsonResponse(action.typed_data, json_dumps_params={"indent": 2})
        response["Content-Disposition"] = f'attachment; filename="action-{action.pk}-{action.chain}-typed-data.json"'
        return response

    def dev_wallet_view(self, request):
        """Development only (`make run`): an EIP-1193 bridge to the local anvil, which holds the demo owners'
        keys. It answers for the signed-in person's registered keys and nothing else."""
        if not devwallet.available() or request.method != "POST":
            raise Http404("The development wallet exists only with a local chain.")
        try:
            body = json.loads(request.body)
            method, params = body["method"], body.get("params") or []
        except (ValueError, KeyError, TypeError):
            return JsonResponse({"error": "expected {method, params}"}, status=400)
        mine = list(request.user.signing_keys.filter(revoked_at__isnull=True).values_list("address", flat=True))
        if method in ("eth_requestAccounts", "eth_accounts"):
            return JsonResponse({"result": mine})
        if method == "eth_signTypedData_v4" and len(params) == 2 and str(params[0]).lower() in mine:
            try:
                return JsonResponse({"result": devwallet.sign_typed_data(params[0].lower(), json.loads(params[1]))})
            except (ValueError, ProviderUnavailable, RpcError) as exc:
                return JsonResponse({"error": str(exc)}, status=502)
        return JsonResponse({"error": f"the development wallet does not do {method} for this account"}, status=403)

    def sign_view(self, request, pk: int):
        action = get_object_or_404(ContractAction, pk=pk)
        return self._sign(request, [action], title=f"Sign action #{action.pk}")

    def sign_group_view(self, request, group: str):
        if not any(request.user.has_perm(p) for p in actions.SIGNING_ROLES):
            raise PermissionDenied
        todo = list(ContractAction.objects.filter(group=group, status__in=AWAITING,
                                                  custody__in=[Custody.SAFE, Custody.GUARDIAN]).order_by("chain"))
        if not todo:
            self.message_user(request, f"Nothing in {group} waits for a signature.", messages.INFO)
            return HttpResponseRedirect(reverse("admin:ops_contractaction_changelist") + f"?group={group}")
        return self._sign(request, todo, title=f"Sign {len(todo)} action(s) of {group}")

    @stepup_required(methods=("POST",))
    def _sign(self, request, todo: list[ContractAction], *, title: str):
        """The readable SafeTx (or guardian pause) and three ways to sign it: the browser wallet, a pasted
        signature (made by any tool from the downloadable typed data), or `manage.py contract_action sign`."""
        if not any(_may_sign(request.user, a) for a in todo):
            raise PermissionDenied
        unsigned = [a for a in todo if a.custody not in (Custody.SAFE, Custody.GUARDIAN)]
        if unsigned:
            return self._done(request, unsigned[0], f"#{unsigned[0].pk} is sent with the server's key "
                                                    f"({unsigned[0].get_custody_display()}): it takes no signature.",
                              messages.INFO)
        forms_by_pk = {a.pk: SignatureForm(request.POST or None, prefix=f"a{a.pk}") for a in todo}
        if request.method == "POST":
            done, failed = [], False
            for action in todo:
                form = forms_by_pk[action.pk]
                if not form.is_valid() or not form.cleaned_data["signature"]:
                    continue
                try:
                    done.append(actions.add_action_signature(
                        actor=request.user, action=action, signature=form.cleaned_data["signature"],
                        source=form.cleaned_data["source"] or SignatureSource.PASTED))
                except ValidationError as exc:
                    errors_to_form(form, exc)
                    failed = True
            if done and not failed:
                for action in done:
                    self.message_user(request, _signed_message(action),
                                      messages.SUCCESS if action.status != ActionStatus.REJECTED else messages.ERROR)
                target = (reverse("admin:ops_contractaction_change", args=[done[0].pk]) if len(done) == 1
                          else reverse("admin:ops_contractaction_changelist") + f"?group={done[0].group}")
                return HttpResponseRedirect(target)
            if not done and not failed:
                for form in forms_by_pk.values():
                    form.add_error("signature", "Sign with the wallet button, or paste a signature.")
        mine = list(request.user.signing_keys.filter(revoked_at__isnull=True).values_list("address", flat=True))
        items = [{"action": a, "form": forms_by_pk[a.pk], "summary": signing_summary(a),
                  "simulation": _fresh_simulation(a), "effects": present_effects(a.proposal_effects)} for a in todo]
        return admin_page(self, request, "admin/ops/contractaction/sign.html", title=title, items=items,
                          my_keys=mine, dev_wallet=devwallet.available())

    def status_view(self, request, chain: str):
        if not request.user.has_perm("ops.view_contractaction"):
            raise PermissionDenied
        if chain not in settings.CHAINS:
            raise Http404(f"Unknown chain {chain!r}.")
        return admin_page(self, request, "admin/ops/contractaction/status.html", title=f"Contract status — {chain}",
                          status=read_contract_status(chain), chains=self._chains(),
                          config=get_chain_config(chain), custody=custody_status(chain),
                          zero_address=chain_safe.ZERO_ADDRESS)

    @stepup_required
    def emergency_stop_view(self, request):
        if not request.user.has_perm("ops.execute_contractaction"):
            raise PermissionDenied
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            done = actions.emergency_stop(actor=request.user, reason=form.cleaned_data["reason"],
                                          chains=self._chains())
            waiting = [a for a in done if a.custody == Custody.GUARDIAN and a.status == ActionStatus.PROPOSED]
            if waiting:
                self.message_user(request, f"TRADES_ENABLED is off. Sign the guardian pause of "
                                           f"{', '.join(a.chain for a in waiting)} now: one signature per chain, "
                                           "the relayer sends each at once.", messages.WARNING)
                return HttpResponseRedirect(reverse("admin:ops_contractaction_sign_group", args=[waiting[0].group]))
            sent_on = ", ".join(a.chain for a in done if a.status != ActionStatus.REJECTED)
            self.message_user(request, f"Emergency stop: TRADES_ENABLED is off; pause sent on "
                                       f"{sent_on or 'no chain (already paused?)'}.", messages.WARNING)
            return HttpResponseRedirect(reverse("admin:ops_contractaction_changelist"))
        return admin_page(self, request, "admin/ops/contractaction/simple_confirm.html", title="Emergency stop",
                          form=form, warning="RB-05: pauses the escrow on every chain at once and turns "
                          "TRADES_ENABLED off. All trading stops. Resuming needs a second person.",
                          submit="Stop all trading now",
                          impacts=[impact.pause_impact(chain, hours=_hours(request)) for chain in self._chains()])

    @stepup_required(methods=('POST',))
    def resume_view(self, request):
        # Requesting needs add, approving a request needs approve: both roles must reach this page.
        if not (request.user.has_perm("ops.add_contractaction") or request.user.has_perm("ops.approve_contractaction")):
            raise PermissionDenied
        pending = ContractAction.objects.filter(kind="unpause", status=ActionStatus.PROPOSED).exclude(group="")
        group = request.POST.get("group") or request.GET.get("group")
        form = ResumeForm(request.POST or None) if not group else ConfirmForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                if group:
                    if not request.user.has_perm("ops.approve_contractaction"):
                        raise PermissionDenied
                    done = actions.approve_resume(actor=request.user, group=group)
                    if all(a.status in IN_FLIGHT for a in done):
                        self.message_user(request, f"Resumed: {len(done)} unpause(s) sent; TRADES_ENABLED comes "
                                                   "back on when they are confirmed on chain.")
                    else:
                        self.message_user(request, f"Approved {len(done)} unpause(s): an operator executes them "
                                                   "from the list; TRADES_ENABLED comes back on when they are "
                                                   "confirmed on chain.")
                else:
                    if not request.user.has_perm("ops.add_contractaction"):
                        raise PermissionDenied
                    done = actions.request_resume(actor=request.user, reason=form.cleaned_data["reason"],
                                                  chains=self._chains(), grace_seconds=form.grace_seconds)
                    if any(a.custody == Custody.SAFE for a in done):
                        # Safe custody: the unpause is approved by the owners' signatures, the requester's first.
                        self.message_user(request, f"Resume requested ({done[0].group}): unpause needs the Safe's "
                                                   "threshold. Sign it now if you are an owner; another owner signs "
                                                   "next, then an operator executes it.", messages.WARNING)
                        return HttpResponseRedirect(reverse("admin:ops_contractaction_sign_group",
                                                            args=[done[0].group]))
                    self.message_user(request, f"Resume requested ({done[0].group}): a different person must "
                                               "approve it here.")
                return HttpResponseRedirect(reverse("admin:ops_contractaction_changelist"))
            except ValidationError as exc:
                errors_to_form(form, exc)
        chains = (sorted({a.chain for a in pending if a.group == group}) if group
                  else _paused_chains(self._chains()))
        return admin_page(self, request, "admin/ops/contractaction/resume.html", title="Resume trading", form=form,
                          group=group, pending=pending, releases=[impact.unpause_release(c) for c in chains],
                          graces=impact.open_graces())

