"""Admin of staff signing keys: each person registers their own Safe-owner address by signing a challenge."""
from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse

from backoffice.admin_utils import ReadOnlyAdminMixin, admin_page, errors_to_form
from ops.models import StaffSigningKey

from . import services as actions
from .forms import ReasonForm, RegisterKeyForm


def _signs(user) -> bool:
    return user.is_active and user.is_staff and any(user.has_perm(p) for p in actions.SIGNING_ROLES)


@admin.register(StaffSigningKey)
class StaffSigningKeyAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    empty_message = ("No signing key registered: “Register my signing key” above. Safe owners sign contract actions "
                     "with it; the key never leaves your wallet.")
    list_display = ("address", "user", "label", "registered_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("=address", "user__username")
    search_help_text = "Exact address, or a username."
    list_select_related = ("user",)
    change_list_template = "admin/ops/staffsigningkey/change_list.html"
    change_form_template = "admin/ops/staffsigningkey/change_form.html"
    readonly_fields = ("user", "address", "label", "challenge", "signature", "registered_at", "revoked_at")

    def has_view_permission(self, request, obj=None) -> bool:
        return _signs(request.user) or request.user.has_perm("ops.view_staffsigningkey")

    def has_module_permission(self, request) -> bool:
        return self.has_view_permission(request)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        # Everyone sees their own keys; ops admins see everyone's (to revoke a leaver's).
        return qs if request.user.has_perm("ops.view_staffsigningkey") else qs.filter(user=request.user)

    # The queryset hides other people's keys; refuse first, so that someone without the role gets a 403, not a
    # "no such key" redirect.
    def change_view(self, request, object_id, form_url="", extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_permission(request):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("register/", wrap(self.register_view), name="ops_staffsigningkey_register"),
                path("<int:pk>/revoke/", wrap(self.revoke_view), name="ops_staffsigningkey_revoke"),
                *super().get_urls()]

    def register_view(self, request):
        if not _signs(request.user):
            raise PermissionDenied
        form = RegisterKeyForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                key = actions.register_signing_key(actor=request.user, address=form.cleaned_data["address"],
                                                   challenge=form.cleaned_data["challenge"],
                                                   signature=form.cleaned_data["signature"],
                                                   label=form.cleaned_data["label"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                self.message_user(request, f"Registered {key.address} as your signing key.")
                return HttpResponseRedirect(reverse("admin:ops_staffsigningkey_changelist"))
        # The challenge posted back keeps the signature it carries valid; a refused one (expired, altered) is
        # replaced by a fresh one to sign, or signing again would fail again.
        keep = form.is_bound and "challenge" not in form.errors
        challenge = (form.data.get("challenge") if keep else None) or actions.signing_key_challenge(user=request.user)
        form.initial["challenge"] = challenge
        if form.is_bound:
            form.data = form.data.copy()
            form.data["challenge"] = challenge
        return admin_page(self, request, "admin/ops/staffsigningkey/register.html", title="Register my signing key",
                          form=form, challenge=challenge)

    def revoke_view(self, request, pk: int):
        key = get_object_or_404(StaffSigningKey, pk=pk)
        if key.user_id != request.user.pk and not request.user.has_perm("ops.change_staffsigningkey"):
            raise PermissionDenied
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                actions.revoke_signing_key(actor=request.user, key=key, reason=form.cleaned_data["reason"])
            except ValidationError as exc:
                errors_to_form(form, exc)
            else:
                self.message_user(request, f"Revoked {key.address}: it signs nothing from now on.", messages.WARNING)
                return HttpResponseRedirect(reverse("admin:ops_staffsigningkey_changelist"))
        return admin_page(self, request, "admin/ops/contractaction/simple_confirm.html",
                          title=f"Revoke signing key {key.address}", form=form, submit="Revoke",
                          warning="Signatures it already gave stay recorded; no new one is accepted.")
