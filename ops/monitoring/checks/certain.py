"""The checks that can pause a chain by themselves, run as soon as the sync has applied new blocks: the time from a
drain to the pause is then counted in blocks (the sync's pace), not in the minutes of the beat schedule."""
from __future__ import annotations

import logging

from backoffice.locks import try_advisory_lock

from .contracts import check_contract
from .custody import check_custody_of

logger = logging.getLogger(__name__)


def _one_at_a_time(chain: str):
    """Syncs come every poll: while one evaluation of a chain runs, the next is skipped, not queued behind it."""
    return try_advisory_lock(f"ops-check-now:{chain}")


def check_chain_now(*, chain: str) -> list[str]:
    """The contracts (solvency, settings) and custody checks of one chain, with their automatic pause. Returns the
    alert keys raised, or ["skipped"] while another evaluation of the chain is running."""
    with _one_at_a_time(chain) as got:
        if not got:
            return ["skipped"]
        return check_contract(chain) + check_custody_of(chain)
