"""Giving a staff signature over a SafeTx or a guardian pause: verified against the chain, counted, and a guardian's
pause sent at once.
"""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.audit.services import record_audit
from chain import safe as chain_safe
from chain import transactions
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ActionSignature,
    ActionStatus,
    ContractAction,
    Custody,
    SignatureSource,
    StaffSigningKey,
)

from . import counting, execute, stale, transitions


def add_action_signature(*, actor: Any, action: ContractAction, signature: str,
                         source: str = SignatureSource.PASTED) -> ContractAction:
    """Verify one staff signature over the action's typed data and record it (audited).

    `actor` must be active staff holding the role (`required_role`: the execute role for a guardian pause).
    The signature must recover to a key registered to `actor`, that address must be a current owner
    of the Safe (or a guardian), and the Safe's nonce must still be the SafeTx's; a guardian pause must
    be signed before its deadline (chain time). When the counting signatures (`tally`) then reach the
    threshold with four eyes, the action becomes approved. A guardian's pause is executed at once
    (RB-05). Raises ValidationError naming the signer otherwise; nothing is recorded then.
    """
    if actor is None or isinstance(actor, str) or not actor.is_active or not actor.is_staff:
        raise PermissionDenied("Only an active staff member can sign.")
    if action.custody == Custody.GUARDIAN and not actor.has_perm("ops.execute_contractaction"):
        # Refused before anything is recorded: the signature would approve a pause its signer may not send.
        raise PermissionDenied(f"{actor.get_username()} may not sign a guardian pause: signing it sends the pause at "
                               "once, which takes the execute role (ops.execute_contractaction). Ask an operator "
                               "who holds it and a guardian key to sign.")
    if not any(actor.has_perm(p) for p in counting.required_role(action, actor.pk)):
        raise PermissionDenied(f"{actor.get_username()} may not sign contract actions.")
    if action.custody not in (Custody.SAFE, Custody.GUARDIAN):
        raise ValidationError({"signature": f"Action #{action.pk} is sent with the server's key: it takes no "
                                            "staff signature."})
    try:
        raw = chain_safe.normalize_signature(signature, typed_only=action.custody == Custody.GUARDIAN)
    except chain_safe.BadSignature as exc:
        raise ValidationError({"signature": str(exc)}) from None
    text = "0x" + raw.hex()
    # A signature over another hash is refused by name (a replay). The same bytes on another action with the same
    # hash are no replay: a re-proposal of a rejected SafeTx at the same Safe nonce has that hash, and wallets
    # sign deterministically, so its owners give byte-identical signatures again.
    used = (ActionSignature.objects.filter(signature=text).exclude(action=action)
            .exclude(action__signing_hash=action.signing_hash).select_related("action").first())
    if used is not None:
        raise ValidationError({"signature": f"This signature by {counting.who(used.signer_address)} was given to "
                                            f"action #{used.action_id} (nonce {used.action.safe_nonce}): a signature "
                                            "is valid for one SafeTx only. Sign this action's own typed data."})
    signer = chain_safe.recover_signer(action.signing_hash, raw)
    key = StaffSigningKey.objects.filter(address=signer, revoked_at__isnull=True).select_related("user").first()
    mine = list(StaffSigningKey.objects.filter(user=actor, revoked_at__isnull=True).values_list("address", flat=True))
    if key is None:
        hint = f" Your registered key{'s are' if len(mine) > 1 else ' is'} {', '.join(mine)}." if mine else \
            " You have no registered signing key: register one first (Operations → Staff signing keys)."
        raise ValidationError({"signature": f"The signature {actor.get_username()} submitted recovers to {signer}, "
                                            "which is no registered signing key. "
                                            f"A signature made over another SafeTx (another nonce or calldata) or by "
                                            f"another wallet recovers to an unknown address.{hint}"})
    if key.user_id != actor.pk:
        raise ValidationError({"signature": f"The signature was made by {signer}, the key of "
                                            f"{key.user.get_username()}: each person submits their own signature."})
    try:
        signers = counting.current_signers(action)
        chain_now = transactions.chain_time(action.chain) if action.custody == Custody.GUARDIAN else 0
    except (ProviderUnavailable, RpcError) as exc:
        raise transitions.rpc_error(action.chain, exc, "the signature was not recorded") from None
    if action.custody == Custody.GUARDIAN and action.guardian_deadline_seconds <= chain_now:
        # The module checks the deadline against block.timestamp: recorded, it would approve a pause that
        # can only fail at execution.
        raise ValidationError({"signature": f"The guardian pause #{action.pk} could be signed until "
                                            f"{action.guardian_deadline:%Y-%m-%d %H:%M:%S} UTC (chain time): it "
                                            "expired, and nothing was recorded. Start the pause again (Emergency "
                                            "stop…) and sign the new one at once."})
    if signers.nonce != action.safe_nonce:
        stale.mark_stale_actions(chain=action.chain)
        raise ValidationError({"signature": f"The {'Safe' if signers.kind == 'owner' else 'module'}'s nonce is now "
                                            f"{signers.nonce}, not {action.safe_nonce}: this action can no longer "
                                            "execute. Propose it again."})
    if signer not in signers.addresses:
        role = "a guardian" if signers.kind == "guardian" else "an owner of the Safe " + action.safe_address
        raise ValidationError({"signature": f"{counting.who(signer)} is not {role} on {action.chain}: its signature "
                                            "cannot count."})
    with transaction.atomic():
        action = ContractAction.objects.select_for_update().get(pk=action.pk)
        if action.status not in (ActionStatus.PROPOSED, ActionStatus.APPROVED):
            raise ValidationError({"status": f"Action #{action.pk} is {action.get_status_display().lower()}: it takes "
                                             "no more signatures."})
        if action.signatures.filter(signed_by=actor).exists():
            raise ValidationError({"signature": f"You ({actor.get_username()}) already signed action #{action.pk}: "
                                                "one person counts once, whatever keys they hold."})
        try:
            with transaction.atomic():
                ActionSignature.objects.create(action=action, signer_address=signer, signed_by=actor, signature=text,
                                               source=source)
        except IntegrityError:
            raise ValidationError({"signature": f"{signer} already signed action #{action.pk}."}) from None
        before = {"status": action.status}
        counted = counting.tally(action, signers)
        if counted.met and action.status == ActionStatus.PROPOSED:
            # Approved again after being sent back for signatures: the database keeps the first approver as
            # recorded (it never changes); this signature's audit row says who completed it this time.
            first_other = action.approved_by or next(
                (s.signed_by for s in action.signatures.select_related("signed_by") if s.signer_address in counted.valid
                 and (s.signed_by_id != action.proposed_by_id or action.kind == "pause")), actor)
            action.status, action.approved_by, action.approved_at = ActionStatus.APPROVED, first_other, timezone.now()
            action.save(update_fields=["status", "approved_by", "approved_at"])
        record_audit(actor=actor, action="add_action_signature", obj=action, before=before,
                     after={"status": action.status, "signer": signer, "source": source, "signing_hash":
                            action.signing_hash, "valid_signatures": len(counted.valid),
                            "threshold": counted.threshold}, reason=action.reason)
    if action.custody == Custody.GUARDIAN and action.status == ActionStatus.APPROVED:
        return execute.execute_contract_action(actor=actor, action=action)
    return action
