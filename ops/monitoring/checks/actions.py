"""The contract-actions check (runbook §5): transactions stuck unmined, and orders left past a deadline."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models.functions import Coalesce
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.durations import human_duration
from chain.config import configured_chains
from chain.models import ChainEvent, ChainState
from ops.actions.timeouts import TIMEOUT_KINDS
from ops.models import IN_FLIGHT, ContractAction

logger = logging.getLogger(__name__)


def check_contract_actions() -> list[str]:
    """Runbook §5 ("auto-expire/release stops") and the 002 failure alert: per chain, transactions signed or sent
    ACTION_STUCK_SECONDS ago and not mined (P2: replace them), and orders still funded or delivered
    TIMEOUT_OVERDUE_SECONDS past their seller or buyer deadline (P2: the timeout keeper is not doing its job;
    inhibited while the escrow is paused, when it skips the chain on purpose, and just after an unpause). Each
    resolves when its check finds it clear. A failed action pages when it fails."""
    now, raised = timezone.now(), []
    stuck_since = now - timedelta(seconds=settings.ACTION_STUCK_SECONDS)
    overdue_since = now - timedelta(seconds=settings.TIMEOUT_OVERDUE_SECONDS)
    paused = set(ChainState.objects.filter(paused=True).values_list("chain", flat=True))
    for chain in configured_chains():
        stuck = list(ContractAction.objects.filter(chain=chain, status__in=IN_FLIGHT)
                     .annotate(since=Coalesce("sent_at", "signed_at")).filter(since__lt=stuck_since)
                     .order_by("pk").values_list("pk", flat=True)[:20])
        if stuck:
            raise_alert(key=f"actions-stuck:{chain}", severity="P2", source="check_contract_actions",
                        title=f"{chain}: {len(stuck)} contract transaction(s) not mined after "
                              f"{human_duration(settings.ACTION_STUCK_SECONDS)}",
                        message=f"Actions {', '.join(f'#{pk}' for pk in stuck)}: signed or sent, not mined. Open each "
                                "and use “Replace stuck tx…” (fees raised 12.5%), or check the relayer's gas.")
            raised.append(f"actions-stuck:{chain}")
        # Paused, the keeper skips the chain on purpose; just unpaused, it is working through the backlog: overdue
        # orders are then the pause's doing, which already paged. Recorded, inhibited, not sent.
        inhibited = (f"{chain} is paused: the keeper skips it on purpose" if chain in paused else
                     f"{chain} was unpaused in the last {human_duration(settings.TIMEOUT_OVERDUE_SECONDS)}: the "
                     "keeper is working through the backlog" if _unpaused_since(chain, overdue_since) else "")
        overdue = []
        with connection.cursor() as cur:
            for kind, (status, column) in TIMEOUT_KINDS.items():
                # The keeper's own partial index (status, deadline): a range scan of the overdue rows only; an order
                # whose timeout action is in flight is the stuck check's business, not this one's.
                cur.execute(f"SELECT count(*), min({column}) FROM orders o WHERE chain = %s AND status = %s "
                            f"AND {column} < %s AND NOT EXISTS (SELECT 1 FROM ops_contract_actions a WHERE "
                            "a.is_automatic AND a.kind = %s AND a.chain = o.chain "
                            "AND a.order_onchain_id = o.onchain_id "
                            "AND a.status IN ('proposed', 'approved', 'signed', 'sent'))",
                            [chain, status, overdue_since, kind])
                count, oldest = cur.fetchone()
                if count:
                    overdue.append(f"{count} {status} order(s) past the {column.replace('_', ' ')} (oldest "
                                   f"{oldest:%Y-%m-%d %H:%M} UTC) still waiting for {kind}")
        if overdue:
            raise_alert(key=f"timeouts-overdue:{chain}", severity="P2", source="check_contract_actions",
                        title=f"{chain}: order timeouts overdue", message="; ".join(overdue) + ". Runbook §5: check "
                        "the check-seller/buyer-timeouts schedules, the actions worker and the keeper's gas; the "
                        "rejected timeout actions say why (Contract actions, filter automatic).", inhibited=inhibited)
            raised.append(f"timeouts-overdue:{chain}")
    settle_alerts(source="check_contract_actions", raised=raised, scope=[
        f"{rule}:{chain}" for chain in configured_chains() for rule in ("actions-stuck", "timeouts-overdue")])
    return raised


def _unpaused_since(chain: str, when: datetime) -> bool:
    """Whether the escrow was unpaused after `when` (its Unpaused event, through the owner events' index)."""
    return ChainEvent.objects.owner_events(chain).filter(event="Unpaused", block_time__gt=when).exists()
