"""The checks that can pause a chain by themselves, run as soon as the sync has applied new blocks: the time from a
drain to the pause is then counted in blocks (the sync's pace), not in the minutes of the beat schedule."""
from __future__ import annotations

import contextlib
import logging

from django.db import connection

from .contracts import check_contract
from .custody import check_custody_of

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _one_at_a_time(chain: str):
    """Syncs come every poll: while one evaluation of a chain runs, the next is skipped, not queued behind it."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"ops-check-now:{chain}"])
        got = cur.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtext(%s))", [f"ops-check-now:{chain}"])


def check_chain_now(*, chain: str) -> list[str]:
    """The contracts (solvency, settings) and custody checks of one chain, with their automatic pause. Returns the
    alert keys raised, or ["skipped"] while another evaluation of the chain is running."""
    with _one_at_a_time(chain) as got:
        if not got:
            return ["skipped"]
        return check_contract(chain) + check_custody_of(chain)
