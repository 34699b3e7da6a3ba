"""Safe and guardian actions that can never execute (their nonce was used, or a pause signature expired), and the
page when an emergency pause ended without pausing.
"""
from __future__ import annotations

import logging

from backoffice.alerts.services import raise_alert
from chain import transactions
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ActionStatus,
    ContractAction,
    Custody,
)

from . import counting, transitions

logger = logging.getLogger(__name__)


def mark_stale_actions(*, chain: str | None = None) -> int:
    """Mark awaiting Safe and guardian actions whose nonce was consumed (by another action, or outside the
    back office), and guardian pauses whose signature deadline passed, as stale: they can never execute, and
    are never sent. An emergency pause that expired unsent raises a P1 (after its own transaction): the escrow
    was not paused by it."""
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
                seen[key] = counting.current_signers(action).nonce
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
            transitions.mark_action(action, ActionStatus.STALE,
                                    only_from=(ActionStatus.PROPOSED, ActionStatus.APPROVED),
                                    outcome=f"nonce {action.safe_nonce} was used {where}: nothing was sent; propose "
                                            "it again if it is still needed")
            count += 1
    return count


def _expire_guardian_pause(action: ContractAction) -> None:
    """Stale, saying what happened by the status it had (unsigned, or signed but never sent); then a P1 if the
    escrow is not paused (by another way meanwhile). Nothing when the action moved on before the lock (sent)."""
    action.refresh_from_db()
    if action.status not in (ActionStatus.PROPOSED, ActionStatus.APPROVED):
        return
    closed = action.guardian_deadline
    what = ("no guardian signed it" if action.status == ActionStatus.PROPOSED else
            "a guardian signed it but it was not sent")
    moved = transitions.mark_action(action, ActionStatus.STALE, only_from=(action.status,),
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
