"""quiet: ten minutes of `make run`'s stack with the market running, two reorgs shallower than the confirmation depth
and the RPC unreachable for 20 s: nothing of it is a reason to wake anyone. `quiet_pages` counts the P0/P1 alerts
raised (target 0) and `quiet_firing_at_end` the alerts still firing at the end, inhibited ones and the daily report
aside (target 0). Beside them: the reorged blocks and the seconds of outage the run went through."""
from __future__ import annotations

import os
import time

from ._stack import CONFIRMATIONS, query, running_stack, say
from .common import figure

DURATION = float(os.environ.get("BENCH_QUIET_SECONDS", 600))
REORG_DEPTH = 2  # shallower than the 5 confirmations


def main() -> None:
    from chain.rpc import RpcClient

    assert REORG_DEPTH < CONFIRMATIONS
    with running_stack("quiet", market=True) as (_env, node, proxy, _data, db):
        client = RpcClient("bsc", [("node", node)])
        started = time.monotonic()
        events = [(DURATION * 0.2, "reorg"), (DURATION * 0.5, "outage"), (DURATION * 0.7, "reorg")]
        reorged = outages = 0
        for at, what in events:
            time.sleep(max(0.0, started + at - time.monotonic()))
            if what == "reorg":
                snapshot = client.call("evm_snapshot", [])
                top = client.block_number()
                while client.block_number() < top + REORG_DEPTH:
                    time.sleep(0.1)
                client.call("evm_revert", [snapshot])  # the last blocks vanish; interval mining builds others
                reorged += REORG_DEPTH
                say("quiet", f"reorg: blocks {top + 1}..{top + REORG_DEPTH} replaced")
            else:
                proxy.down = True
                time.sleep(20)
                proxy.down = False
                outages += 1
                say("quiet", "the RPC was unreachable for 20 s")
        time.sleep(max(0.0, started + DURATION - time.monotonic()))
        pages = query(db, "SELECT key, severity, title FROM ops_alerts WHERE severity IN ('P0', 'P1')")
        firing = query(db, "SELECT key, severity FROM ops_alerts WHERE resolved_at IS NULL AND inhibited = '' "
                           "AND key NOT LIKE 'daily-check:%%'")
        orders = query(db, "SELECT count(*) FROM orders WHERE chain = 'bsc'")[0][0]
        for key, severity, title in pages:
            say("quiet", f"page: [{severity}] {key}: {title}")
        for key, severity in firing:
            say("quiet", f"firing at the end: [{severity}] {key}")
        figure("quiet_pages", len(pages), "alerts", target=0, seconds=round(time.monotonic() - started),
               reorgs=2, reorged_blocks=reorged, rpc_outage_s=20 * outages, orders_mirrored=orders)
        figure("quiet_firing_at_end", len(firing), "alerts", target=0)
