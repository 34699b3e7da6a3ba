"""The sync check (RB-03): lag per chain over the threshold, and a sync stuck for ten minutes."""
from __future__ import annotations

import logging
from datetime import timedelta

from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from chain.config import configured_chains
from chain.models import EventSyncCursor
from ops.models import PlatformFlag

logger = logging.getLogger(__name__)


SYNC_STUCK_AFTER = timedelta(minutes=10)


def sync_lag_threshold() -> int:
    """RB-03: lag (blocks) over which the sync is a P2; the platform setting, 100 when unset."""
    return int(PlatformFlag.get("SYNC_LAG_ALERT_BLOCKS", 100))


def check_sync() -> list[str]:
    """RB-03 triggers: cursor unchanged for 10 minutes (P1) and lag over the threshold (P2, default 100 blocks)."""
    raised = []
    threshold = sync_lag_threshold()
    now = timezone.now()
    for cursor in EventSyncCursor.objects.filter(chain__in=configured_chains()):
        if now - cursor.updated_at > SYNC_STUCK_AFTER:
            raise_alert(key=f"sync-stuck:{cursor.chain}", severity="P1", source="check_sync",
                        title=f"{cursor.chain} event sync stuck: cursor unchanged since {cursor.updated_at:%H:%M} UTC",
                        message=f"RB-03. Last block {cursor.last_block}, head {cursor.head_block}. "
                                f"Last error: {cursor.last_error[:300] or 'none'}")
            raised.append(f"sync-stuck:{cursor.chain}")
        lag = cursor.lag_blocks
        if lag is not None and lag > threshold:
            raise_alert(key=f"sync-lag:{cursor.chain}", severity="P2", source="check_sync",
                        title=f"{cursor.chain} sync lag {lag} blocks (threshold {threshold})",
                        message="RB-03: check the worker and the RPC providers (RB-07).")
            raised.append(f"sync-lag:{cursor.chain}")
    settle_alerts(source="check_sync", scope=[f"{rule}:{chain}" for chain in configured_chains()
                                              for rule in ("sync-stuck", "sync-lag")], raised=raised)
    return raised
