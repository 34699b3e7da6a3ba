"""Staff signing keys: the registration challenge, registering a key by its signature, and revoking it."""
from __future__ import annotations

import logging
import secrets
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import safe as chain_safe
from chain.addresses import canonical_wallet
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ActionStatus,
    ContractAction,
    Custody,
    StaffSigningKey,
)

from . import counting, transitions

logger = logging.getLogger(__name__)


CHALLENGE_SALT = "ops.signing-key-challenge"


SIGNING_ROLES = ("ops.add_contractaction", "ops.approve_contractaction", "ops.execute_contractaction")


def signing_key_challenge(*, user: Any) -> str:
    """A message for `user` to sign with the key they register: names them and the purpose, and carries
    a signed, timestamped token so it cannot be reused by someone else or after it expires."""
    token = signing.dumps({"u": user.pk, "n": secrets.token_hex(8)}, salt=CHALLENGE_SALT)
    return (f"Escrow back office: register this address as the contract-signing key of staff user "
            f"{user.get_username()}.\nSigning this message costs nothing and moves no funds.\nToken: {token}")


def register_signing_key(*, actor: Any, address: str, challenge: str, signature: str,
                         label: str = "") -> StaffSigningKey:
    """Link an address to `actor` after checking that the challenge is theirs, fresh, and signed by it (audited).

    Raises ValidationError naming the field: an expired or foreign challenge, a signature from another
    address, or an address already registered to someone.
    """
    if not any(actor.has_perm(p) for p in SIGNING_ROLES) or not actor.is_staff or not actor.is_active:
        raise PermissionDenied(f"{actor.get_username()} has no contract-action role: no signing key needed.")
    address = canonical_wallet(address, field="address")
    # A browser submits form fields with CRLF line breaks (and Windows terminals paste them): the challenge
    # is issued, shown and signed with LF, so that is the text the signature is checked against.
    challenge = challenge.replace("\r\n", "\n")
    token = challenge.rsplit("Token: ", 1)[-1].strip() if "Token: " in challenge else ""
    try:
        claims = signing.loads(token, salt=CHALLENGE_SALT, max_age=settings.SIGNING_CHALLENGE_SECONDS)
    except signing.SignatureExpired:
        raise ValidationError({"challenge": "The challenge expired: "
                                            "sign the new one shown here with the same key."}) from None
    except signing.BadSignature:
        raise ValidationError({"challenge": "The challenge was altered or is not ours: sign the message exactly "
                                            "as the page shows it."}) from None
    if claims.get("u") != actor.pk or challenge != _expected(actor, token):
        raise ValidationError({"challenge": "This challenge was issued to another user or altered: sign your own."})
    try:
        recovered = chain_safe.recover_personal_sign(challenge, signature)
    except chain_safe.BadSignature as exc:
        raise ValidationError({"signature": str(exc)}) from None
    if recovered != address:
        raise ValidationError({"signature": f"The signature was made by {recovered}, not by {address}: sign the "
                                            "challenge with the key you are registering."})
    with transaction.atomic():
        existing = StaffSigningKey.objects.select_for_update().filter(address=address).first()
        if existing is not None:
            owner = existing.user.get_username()
            raise ValidationError({"address": f"{address} is already registered to {owner}"
                                              + (" (revoked: a revoked key is never reused)." if existing.revoked_at
                                                 else ".")})
        key = StaffSigningKey.objects.create(user=actor, address=address, label=label.strip()[:100],
                                             challenge=challenge, signature=signature.strip().lower())
        record_audit(actor=actor, action="register_signing_key", obj=key,
                     after={"address": address, "label": key.label}, reason="challenge signed")
    return key


def _expected(user: Any, token: str) -> str:
    head = signing_key_challenge(user=user).rsplit("Token: ", 1)[0]
    return f"{head}Token: {token}"


def revoke_signing_key(*, actor: Any, key: StaffSigningKey, reason: str) -> StaffSigningKey:
    """Withdraw a key (its owner, or an ops admin). No new signature is accepted from it, and those it already
    gave stop counting toward any action not yet sent (`tally` checks the key again at execution)."""
    if key.user_id != actor.pk:
        require_perm(actor, "ops.change_staffsigningkey", "revoke another person's signing key")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to revoke a signing key."})
    with transaction.atomic():
        key = StaffSigningKey.objects.select_for_update().get(pk=key.pk)
        if key.revoked_at:
            raise ValidationError({"key": f"{key.address} was already revoked."})
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        record_audit(actor=actor, action="revoke_signing_key", obj=key, after={"address": key.address}, reason=reason)
    _recount_approved(key)
    return key


def _recount_approved(key: StaffSigningKey) -> None:
    """Approved Safe actions the revoked key signed go back to collecting signatures at once when the rest no
    longer reach the threshold, so no list shows them ready to execute. Best effort: the chain is read for the
    owners, and when it cannot be, execution counts again anyway (`tally` in `_prepare_signed_call`)."""
    signed = ContractAction.objects.filter(status=ActionStatus.APPROVED, custody=Custody.SAFE,
                                           signatures__signer_address=key.address).distinct()
    for action in signed:
        try:
            counted = counting.tally(action, counting.current_signers(action))
        except (ProviderUnavailable, RpcError) as exc:
            logger.warning("recount of action %s after a revoked key skipped: %s", action.pk, exc,
                           extra={"chain": action.chain})
            continue
        if not counted.met:
            outcome = (f"back to collecting signatures: {key.address} was revoked, {len(counted.valid)} valid "
                       f"signature(s) of {counted.threshold} needed; another owner must sign in its place")
            transitions.mark_action(action, ActionStatus.PROPOSED, only_from=(ActionStatus.APPROVED,), outcome=outcome,
                                audit_reason=outcome)
