"""The grace after a pause (issue 24, item 4): requested with a resume, settled when the mirror sees the unpause.

The rule is an interval, not a list of orders: the timeout keeper leaves alone every order whose seller or buyer
deadline fell inside [paused_at, unpaused_at] until unpaused_at + grace (see `timeouts.due_timeouts`). A constant
number of rows however many orders the pause held, and the database checks the window (ends_at = unpaused_at +
grace, one grace waiting per chain).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction

from backoffice.audit.services import record_audit
from ops.models import TimeoutGrace

from . import impact

logger = logging.getLogger(__name__)

MAX_GRACE_SECONDS = 7 * 86400


def _snapshot(grace: TimeoutGrace) -> dict[str, Any]:
    return {"chain": grace.chain, "group": grace.group, "grace_seconds": grace.grace_seconds,
            "paused_at": grace.paused_at, "unpaused_at": grace.unpaused_at, "ends_at": grace.ends_at,
            "orders_at_request": grace.orders_at_request}


def request_timeout_grace(*, actor: Any, chain: str, group: str, grace_seconds: int,
                          now: datetime | None = None) -> TimeoutGrace | None:
    """Hold the keeper off the orders whose deadlines pass during this chain's pause, until `grace_seconds` after
    the unpause. Runs inside the resume request's transaction (audited there). A grace already waiting for this
    chain's unpause (an earlier request that never went through) is replaced: one pause, one grace. 0: none (and
    any waiting one is withdrawn)."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ValidationError({"grace_hours": f"The grace must be between 0 and {MAX_GRACE_SECONDS // 3600} hours."})
    pending = TimeoutGrace.objects.select_for_update().filter(chain=chain, unpaused_at__isnull=True).first()
    if grace_seconds == 0:
        if pending:
            record_audit(actor=actor, action="withdraw_timeout_grace", obj=pending, before=_snapshot(pending),
                         reason=f"resume {group} asks for no grace")
            pending.delete()
        return None
    paused_at = impact.paused_since(chain)
    if paused_at is None:
        raise ValidationError({"grace_hours": f"{chain}: when the pause began is unknown (no Paused event in the "
                                              "mirror, no pause sent by the back office): ask for no grace (0), or "
                                              "wait for the sync."})
    held = impact.unpause_release(chain, paused_at=paused_at, now=now).total
    before = _snapshot(pending) if pending else None
    grace = pending or TimeoutGrace(chain=chain)
    grace.group, grace.grace_seconds, grace.paused_at = group, grace_seconds, paused_at
    grace.orders_at_request, grace.requested_by = held, actor if getattr(actor, "pk", None) else None
    grace.save()
    record_audit(actor=actor, action="request_timeout_grace", obj=grace, before=before, after=_snapshot(grace),
                 reason=f"resume {group}: {held} order(s) whose deadline passed during the pause are held "
                        f"{grace_seconds} s after the unpause")
    return grace


def settle_timeout_graces() -> list[TimeoutGrace]:
    """Close each waiting grace's window at its chain's first Unpaused event after the pause (from the mirror:
    whoever sent the unpause): unpaused_at and ends_at are set (audited). Safe to run twice."""
    settled = []
    for grace in TimeoutGrace.objects.filter(unpaused_at__isnull=True):
        with connection.cursor() as cur:
            cur.execute("SELECT min(block_time) FROM chain_events WHERE chain = %s AND event = 'Unpaused' "
                        "AND contract = 'escrow' AND order_id IS NULL AND wallet IS NULL AND block_time >= %s",
                        [grace.chain, grace.paused_at])
            (unpaused_at,) = cur.fetchone()
        if unpaused_at is None:
            continue
        with transaction.atomic():
            grace = TimeoutGrace.objects.select_for_update().get(pk=grace.pk)
            if grace.unpaused_at is not None:
                continue
            grace.unpaused_at, grace.ends_at = unpaused_at, unpaused_at + timedelta(seconds=grace.grace_seconds)
            grace.save(update_fields=["unpaused_at", "ends_at"])
            record_audit(actor="system:timeouts", action="settle_timeout_grace", obj=grace, after=_snapshot(grace),
                         reason=f"{grace.chain} unpaused at {unpaused_at:%Y-%m-%d %H:%M:%S} UTC: the held orders are "
                                f"left alone until {grace.ends_at:%Y-%m-%d %H:%M:%S} UTC")
        logger.info("timeout grace of %s (%s) settled: unpaused at %s, holds until %s", grace.chain, grace.group,
                    unpaused_at.isoformat(), grace.ends_at.isoformat(), extra={"chain": grace.chain})
        settled.append(grace)
    return settled
