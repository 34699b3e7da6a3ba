"""Who may sign an owner action now (the Safe's owners or the module's guardians, read from the chain), and which
recorded signatures still count.
"""
from __future__ import annotations

from dataclasses import dataclass

from chain import safe as chain_safe
from chain.config import get_chain_config
from ops.models import (
    ActionSignature,
    ContractAction,
    Custody,
    StaffSigningKey,
)


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


def who(address: str) -> str:
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
            invalid.append(f"{who(sig.signer_address)}: {problems[sig.pk]}")
        else:
            valid[sig.signer_address] = bytes.fromhex(sig.signature[2:])
            people.add(sig.signed_by_id)
    # A pause needs one guardian (RB-05); anything else needs a person besides the proposer.
    four_eyes = bool(people) if action.kind == "pause" and action.custody == Custody.GUARDIAN \
        else bool(people - {action.proposed_by_id})
    return Tally(valid, invalid, people, signers.threshold, four_eyes)
