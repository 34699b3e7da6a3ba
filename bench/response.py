"""response: the first response to a drained escrow, with `make run`'s stack (real workers and beat, the market
running, a 0.75 s chain with 5 confirmations, polled every second): the blocks and seconds from the drain to the P0
(`response_detect_blocks`) and to paused() being true (`response_pause_blocks`, `response_pause_seconds`; target
≤ 12 blocks, ≤ 9 s at BSC's block time). The baseline is what the runbook had before: a person paged, signing in
with password, one-time code and step-up, and signing a pause, which takes minutes; it is not measured here."""
from __future__ import annotations

import time

from ._stack import query, running_stack, say, wait_for
from .common import figure

TARGET_BLOCKS = 12


def main() -> None:
    from chain import drill
    from chain.rpc import RpcClient

    with running_stack("response", market=True) as (_env, node, _proxy, data, db):
        client = RpcClient("bsc", [("node", node)])
        escrow, token = data["escrow"], data["tokens"]["USDT"]

        def head() -> int:
            return client.block_number()

        def open_orders() -> int:
            return query(db, "SELECT count(*) FROM orders WHERE chain = 'bsc' AND status = 'funded' "
                             "AND token_symbol = 'USDT'")[0][0]

        if not wait_for(lambda: open_orders() >= 2, timeout=240, step=1):
            raise SystemExit("the market opened no USDT order the mirror knows of within 4 minutes")
        time.sleep(15)  # a few polls and checks with the market running: the baseline state
        pages_before = query(db, "SELECT count(*) FROM ops_alerts WHERE severity IN ('P0', 'P1')")[0][0]
        held = drill._balance(client, token, escrow)
        drain_block = drill.set_token_balance(client, token=token, holder=escrow, amount=held // 10)
        drained = time.monotonic()
        say("response", f"drained the escrow's USDT ({held} → {held // 10}) at block {drain_block}")
        detect_block = paused_at = None
        while time.monotonic() - drained < 180:
            if detect_block is None and query(db, "SELECT 1 FROM ops_alerts WHERE key = 'escrow-insolvent:bsc'"):
                detect_block = head()
            if drill.paused(client, escrow):
                paused_at = time.monotonic()
                break
            time.sleep(0.05)
        if paused_at is None:
            raise SystemExit("the escrow was not paused within 180 s of the drain")
        [(tx_hash, custody, actor)] = query(
            db, "SELECT a.tx_hash, a.custody, l.actor_label FROM ops_contract_actions a "
                "JOIN audit_log l ON l.object_id = a.id::text AND l.action = 'propose_contract_action' "
                "WHERE a.kind = 'pause' AND a.is_automatic")
        paused_block = int(client.call("eth_getTransactionReceipt", [tx_hash])["blockNumber"], 16)
        detect_block = detect_block or paused_block
        say("response", f"paused at block {paused_block} by {actor} ({custody}); {pages_before} page(s) before the "
                        "drain")
        figure("response_pause_blocks", paused_block - drain_block, "blocks", target=TARGET_BLOCKS,
               block_time_s=0.75, confirmations=5, poll_s=1)
        figure("response_pause_seconds", paused_at - drained, "s", target=TARGET_BLOCKS * 0.75)
        figure("response_detect_blocks", detect_block - drain_block, "blocks", pages_before_drain=pages_before)
