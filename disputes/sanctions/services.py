"""Sanctions screening writes, one doorway for the admin, the command, the tasks and the tests: importing a list
version (and re-screening every known wallet against its new entries), screening the wallets the mirror meets, and
what a hit does. Each writes its audit rows in its own transaction; alerts go out after commit.

A hit blacklists the wallet with source "sanctions" (the list version, or the oracle and its block, as evidence),
records each open order and dispute it was party to, opens a "sanctions" review flag (staff resolve it to say it is
handled) and raises a P1. A wallet that leaves every list is never lifted by itself: a "delisted" review flag asks
staff to lift it. Each concern lives in its own module (versions, screening, hits); this one only names them.
"""
from __future__ import annotations

from .hits import SCREENING_ACTOR, Candidate, alert_hits, record_sanctions_hits
from .screening import SCREEN_BATCH, ScreenResult, screen_new_wallets
from .versions import (
    REFRESH_ACTOR,
    RESCREEN_SQL,
    SHRINK_LIMIT,
    RefreshResult,
    download_list,
    import_sanctions_list,
    record_list_unchanged,
    refresh_sanctions_lists,
    rescreen_list_version,
)

__all__ = [
    "REFRESH_ACTOR", "RESCREEN_SQL", "SCREENING_ACTOR", "SCREEN_BATCH", "SHRINK_LIMIT", "Candidate", "RefreshResult",
    "ScreenResult", "alert_hits", "download_list", "import_sanctions_list", "record_list_unchanged",
    "record_sanctions_hits", "refresh_sanctions_lists", "rescreen_list_version", "screen_new_wallets",
]
