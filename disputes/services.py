"""Trust and safety writes: blacklisting and lifting. Each writes its audit row in the same transaction."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from chain.addresses import canonical_wallet
from chain.models import Order
from ops.audit import record_audit

from .models import Blacklist, BlacklistSource


def _snapshot(entry: Blacklist) -> dict[str, Any]:
    return {
        "wallet": entry.wallet,
        "reason": entry.reason,
        "source": entry.source,
        "expires_at": entry.expires_at,
        "order_id": entry.order_id,
        "lifted_at": entry.lifted_at,
        "lift_reason": entry.lift_reason,
    }


def blacklist_wallet(*, actor: Any, wallet: str, reason: str, source: str = BlacklistSource.MANUAL,
                     expires_at: datetime | None = None, order: Order | None = None) -> Blacklist:
    """Blacklist one wallet. Raises ValidationError naming the field on bad input or a duplicate.

    Side effects: user_profiles.is_blacklisted becomes true (database trigger); one audit row.
    """
    wallet = canonical_wallet(wallet)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why this wallet is blacklisted."})
    if source not in BlacklistSource.values:
        raise ValidationError({"source": f"Unknown source {source!r}: use one of {', '.join(BlacklistSource.values)}."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry is in the past: leave it empty or pick a future time (UTC)."})
    try:
        with transaction.atomic():
            entry = Blacklist.objects.create(wallet=wallet, reason=reason, source=source, expires_at=expires_at,
                                             order=order, created_by=actor if getattr(actor, "pk", None) else None)
            record_audit(actor=actor, action="blacklist_wallet", obj=entry, after=_snapshot(entry), reason=reason)
    except IntegrityError as exc:
        if "blacklist_one_active_per_wallet" in str(exc):
            raise ValidationError({"wallet": f"{wallet} is already blacklisted: lift the active entry first."}) from None
        raise
    return entry


def lift_blacklist_entry(*, actor: Any, entry: Blacklist, reason: str) -> Blacklist:
    """Lift an active blacklisting (the row stays, as history). Raises ValidationError if already lifted."""
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to lift a blacklisting."})
    with transaction.atomic():
        entry = Blacklist.objects.select_for_update().get(pk=entry.pk)
        if entry.lifted_at is not None:
            raise ValidationError({"wallet": f"{entry.wallet} was already lifted at {entry.lifted_at:%Y-%m-%d %H:%M} UTC."})
        before = _snapshot(entry)
        entry.lifted_at = timezone.now()
        entry.lifted_by = actor if getattr(actor, "pk", None) else None
        entry.lift_reason = reason
        entry.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
        record_audit(actor=actor, action="lift_blacklist_entry", obj=entry, before=before, after=_snapshot(entry),
                     reason=reason)
    return entry
