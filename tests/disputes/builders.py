"""Builders of disputed orders for the trust and safety tests (on top of tests/factories.py)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from chain.models import OrderStatus
from tests import factories as f


def ago(**delta) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**delta)


def disputed_order(*, disputed_hours: float = 1, deadline_passed: bool = False, **fields):
    """A disputed order, disputed `disputed_hours` ago, with the arbitrator's deadline passed or ahead."""
    disputed_at = ago(hours=disputed_hours)
    fields.setdefault("created_at", disputed_at - timedelta(hours=2))
    fields.setdefault("arbitrator_wallet", f.wallet(0xA1))
    return f.order(status=OrderStatus.DISPUTED, disputed_at=disputed_at,
                   dispute_deadline=ago(hours=1) if deadline_passed else ago(hours=-72), **fields)
