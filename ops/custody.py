"""Custody services: staff signing keys, signatures over a SafeTx or a guardian pause, and their verification.

Four eyes hold twice: the Safe counts owners' signatures on chain, and the database counts people
(one signature per person, and someone other than the proposer among them). Signatures are always
checked against the Safe's owners and threshold read from the chain at that moment, never against
a stored copy, both when they are given and again right before execution.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain import safe as chain_safe
from chain import transactions
from chain.addresses import canonical_wallet
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError

from .models import ActionSignature, ActionStatus, ContractAction, Custody, SignatureSource, StaffSigningKey

logger = logging.getLogger(__name__)

CHALLENGE_SALT = "ops.signing-key-challenge"
SIGNING_ROLES = ("ops.add_contractaction", "ops.approve_contractaction", "ops.execute_contractaction")


def _rpc_error(chain: str, exc: Exception, what: str) -> ValidationError:
    return ValidationError({"chain": f"{chain} RPC unreachable, {what}: {exc}"})


# ---------------------------------------------------------------------------- signing keys


def signing_key_challenge(*, user: Any) -> str:
    """A message for `user` to sign with the key they register: names them and the purpose, and carries
    a signed, timestamped token so it cannot be reused by someone else or after it expires."""
    token = signing.dumps({"u": user.pk, "n": secrets.token_hex(8)}, salt=CHALLENGE_SALT)
    return (f"Escrow back office: register this address as the contract-signing key of staff user "
            f"{user.get_username()}.\nSigning this message costs nothing and moves no funds.\nToken: {token}")


def register_signing_key(*, actor: Any, address: str, challenge: str, signature: str, label: str = "") -> StaffSigningKey:
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
        raise ValidationError({"challenge": "The challenge expired: sign the new one shown here with the same key."}) from None
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
    from . import actions

    signed = ContractAction.objects.filter(status=ActionStatus.APPROVED, custody=Custody.SAFE,
                                           signatures__signer_address=key.address).distinct()
    for action in signed:
        try:
            counted = tally(action, current_signers(action))
        except (ProviderUnavailable, RpcError) as exc:
            logger.warning("recount of action %s after a revoked key skipped: %s", action.pk, exc,
                           extra={"chain": action.chain})
            continue
        if not counted.met:
            outcome = (f"back to collecting signatures: {key.address} was revoked, {len(counted.valid)} valid "
                       f"signature(s) of {counted.threshold} needed; another owner must sign in its place")
            actions.mark_action(action, ActionStatus.PROPOSED, only_from=(ActionStatus.APPROVED,), outcome=outcome,
                                audit_reason=outcome)


# ---------------------------------------------------------------------------- reading who may sign


@dataclass(frozen=True)
class Signers:
    """Who may sign an action now, read from the chain: the Safe's owners (or the module's guardians)."""
    addresses: tuple[str, ...]
    threshold: int
    nonce: int
    kind: str  # "owner" or "guardian"


def current_signers(action: ContractAction) -> Signers:
    cfg = get_chain_config(action.chain)
    if action.custody == Custody.GUARDIAN:
        state = chain_safe.read_guardians(action.chain, action.tx_to, action.safe_address)
        return Signers(state.guardians, 1, state.nonce, "guardian")
    state = chain_safe.read_safe(action.chain, action.safe_address or cfg.escrow)
    return Signers(state.owners, state.threshold, state.nonce, "owner")


def _who(address: str) -> str:
    key = StaffSigningKey.objects.filter(address=address).select_related("user").first()
    return f"{address} ({key.user.get_username()})" if key else address


@dataclass(frozen=True)
class Tally:
    valid: dict[str, bytes]         # signer address → signature, for signers who may sign now
    invalid: list[str]              # "0x… (bob): no longer an owner"
    people: set[int]
    threshold: int
    four_eyes: bool                 # someone other than the proposer signed

    @property
    def met(self) -> bool:
        return len(self.valid) >= self.threshold and self.four_eyes


def required_role(action: ContractAction, user_id: int | None) -> tuple[str, ...]:
    """The permissions of which a signer must hold one, now, for their signature to count on `action`.

    A guardian's signature sends the pause at once, so it takes the execute role; a SafeTx signature is an
    approval, except the proposer's own, which stands with either proposing or approving.
    """
    if action.custody == Custody.GUARDIAN:
        return ("ops.execute_contractaction",)
    if user_id is not None and user_id == action.proposed_by_id:
        return ("ops.add_contractaction", "ops.approve_contractaction")
    return ("ops.approve_contractaction",)


def signature_problems(action: ContractAction, sigs: list[ActionSignature],
                       addresses: tuple[str, ...] | None) -> dict[int, str]:
    """Why each of the action's recorded signatures `sigs` (read with their `signed_by`) no longer counts, by
    signature id (absent: it counts).

    A signature counts while its address is an owner (or guardian) on chain, its key is not revoked, and its
    signer is an active staff member who still holds the role (`required_role`): revoking a key,
    deactivating a person or taking their role withdraws their signatures from everything not yet sent.
    `addresses` None (the chain could not be read) checks only the database.
    """
    keys = {k.address: k for k in StaffSigningKey.objects.filter(address__in=[s.signer_address for s in sigs])}
    role, other = ("a guardian", "another guardian") if action.custody == Custody.GUARDIAN \
        else ("an owner", "another owner")
    problems = {}
    for sig in sigs:
        user, key = sig.signed_by, keys.get(sig.signer_address)
        roles = required_role(action, user.pk)
        if addresses is not None and sig.signer_address not in addresses:
            why = f"no longer {role}"
        elif key is None or key.user_id != user.pk:
            why = f"the key is no longer registered to {user.get_username()}"
        elif key.revoked_at:
            why = f"the key was revoked on {key.revoked_at:%Y-%m-%d %H:%M} UTC"
        elif not user.is_active or not user.is_staff:
            why = f"{user.get_username()}'s account is deactivated"
        elif not any(user.has_perm(p) for p in roles):
            why = f"{user.get_username()} no longer holds the {' or '.join(roles)} role"
        else:
            continue
        problems[sig.pk] = f"{why}: its signature no longer counts; {other} must sign in its place"
    return problems


def tally(action: ContractAction, signers: Signers) -> Tally:
    """The signatures that count now (see `signature_problems`), and whether they reach the threshold."""
    valid, invalid, people = {}, [], set()
    sigs = list(action.signatures.select_related("signed_by"))
    problems = signature_problems(action, sigs, signers.addresses)
    for sig in sigs:
        if sig.pk in problems:
            invalid.append(f"{_who(sig.signer_address)}: {problems[sig.pk]}")
        else:
            valid[sig.signer_address] = bytes.fromhex(sig.signature[2:])
            people.add(sig.signed_by_id)
    # A pause needs one guardian (RB-05); anything else needs a person besides the proposer.
    four_eyes = bool(people) if action.kind == "pause" and action.custody == Custody.GUARDIAN \
        else bool(people - {action.proposed_by_id})
    return Tally(valid, invalid, people, signers.threshold, four_eyes)


# ---------------------------------------------------------------------------- giving a signature


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
    if not any(actor.has_perm(p) for p in required_role(action, actor.pk)):
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
        raise ValidationError({"signature": f"This signature by {_who(used.signer_address)} was given to action "
                                            f"#{used.action_id} (nonce {used.action.safe_nonce}): a signature is "
                                            "valid for one SafeTx only. Sign this action's own typed data."})
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
        signers = current_signers(action)
        chain_now = transactions.chain_time(action.chain) if action.custody == Custody.GUARDIAN else 0
    except (ProviderUnavailable, RpcError) as exc:
        raise _rpc_error(action.chain, exc, "the signature was not recorded") from None
    if action.custody == Custody.GUARDIAN and action.guardian_deadline_seconds <= chain_now:
        # The module checks the deadline against block.timestamp: recorded, it would approve a pause that
        # can only fail at execution.
        raise ValidationError({"signature": f"The guardian pause #{action.pk} could be signed until "
                                            f"{action.guardian_deadline:%Y-%m-%d %H:%M:%S} UTC (chain time): it "
                                            "expired, and nothing was recorded. Start the pause again (Emergency "
                                            "stop…) and sign the new one at once."})
    if signers.nonce != action.safe_nonce:
        mark_stale_actions(chain=action.chain)
        raise ValidationError({"signature": f"The {'Safe' if signers.kind == 'owner' else 'module'}'s nonce is now "
                                            f"{signers.nonce}, not {action.safe_nonce}: this action can no longer "
                                            "execute. Propose it again."})
    if signer not in signers.addresses:
        raise ValidationError({"signature": f"{_who(signer)} is not {'a guardian' if signers.kind == 'guardian' else 'an owner of the Safe ' + action.safe_address}"
                                            f" on {action.chain}: its signature cannot count."})
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
        counted = tally(action, signers)
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
        from . import actions

        return actions.execute_contract_action(actor=actor, action=action)
    return action


# ---------------------------------------------------------------------------- stale SafeTxs


def mark_stale_actions(*, chain: str | None = None) -> int:
    """Mark awaiting Safe and guardian actions whose nonce was consumed (by another action, or outside the
    back office), and guardian pauses whose signature deadline passed, as stale: they can never execute, and
    are never sent. An emergency pause that expired unsent raises a P1 (after its own transaction): the escrow
    was not paused by it."""
    from . import actions

    count = 0
    qs = ContractAction.objects.filter(custody__in=[Custody.SAFE, Custody.GUARDIAN],
                                       status__in=[ActionStatus.PROPOSED, ActionStatus.APPROVED])
    if chain:
        qs = qs.filter(chain=chain)
    seen: dict[tuple[str, str], int] = {}
    chain_now: dict[str, int] = {}
    for action in qs:
        key = (action.chain, action.tx_to)
        try:
            if key not in seen:
                seen[key] = current_signers(action).nonce
            if action.custody == Custody.GUARDIAN and action.chain not in chain_now:
                chain_now[action.chain] = transactions.chain_time(action.chain)
        except (ProviderUnavailable, RpcError) as exc:
            logger.warning("stale check of action %s skipped: %s", action.pk, exc, extra={"chain": action.chain})
            continue
        if action.custody == Custody.GUARDIAN and seen[key] <= action.safe_nonce \
                and action.guardian_deadline_seconds <= chain_now[action.chain]:
            _expire_guardian_pause(action)
            count += 1
            continue
        if seen[key] > action.safe_nonce:
            winner = ContractAction.objects.filter(chain=action.chain, tx_to=action.tx_to, safe_nonce=action.safe_nonce,
                                                   status__in=[ActionStatus.SENT, ActionStatus.CONFIRMED]).first()
            where = f"by action #{winner.pk}" if winner else "outside the back office"
            actions.mark_action(action, ActionStatus.STALE, only_from=(ActionStatus.PROPOSED, ActionStatus.APPROVED),
                                outcome=f"nonce {action.safe_nonce} was used {where}: nothing was sent; propose "
                                        "it again if it is still needed")
            count += 1
    return count


def _expire_guardian_pause(action: ContractAction) -> None:
    """Stale, saying what happened by the status it had (unsigned, or signed but never sent); then a P1 if the
    escrow is not paused (by another way meanwhile). Nothing when the action moved on before the lock (sent)."""
    from . import actions

    action.refresh_from_db()
    if action.status not in (ActionStatus.PROPOSED, ActionStatus.APPROVED):
        return
    closed = action.guardian_deadline
    what = ("no guardian signed it" if action.status == ActionStatus.PROPOSED else
            "a guardian signed it but it was not sent")
    moved = actions.mark_action(action, ActionStatus.STALE, only_from=(action.status,),
                                outcome=f"{what} before the pause signature's deadline "
                                        f"({closed:%Y-%m-%d %H:%M:%S} UTC): nothing was sent")
    if moved.status == ActionStatus.STALE:
        alert_pause_not_done(action, f"{what} before {closed:%Y-%m-%d %H:%M:%S} UTC")


def alert_pause_not_done(action: ContractAction, what: str) -> None:
    """A P1 for a guardian pause that ended without pausing (expired, or failed on chain), unless the escrow is
    paused anyway (by another way meanwhile). Call after the action's own transaction."""
    try:
        paused = transactions.escrow_paused(action.chain, action.to_address)
    except (ProviderUnavailable, RpcError):
        paused = False  # unknown: say so rather than stay silent about an emergency stop that did not happen
    if not paused:
        raise_alert(key=f"guardian-pause-expired:{action.chain}:{action.pk}", severity="P1", source="contract_actions",
                    title=f"{action.chain}: emergency pause #{action.pk} did not pause, the escrow is NOT paused",
                    message=f"Pause #{action.pk} ({action.reason}): {what}. If trading must still stop, run Emergency "
                            "stop again and have a guardian sign at once.")
