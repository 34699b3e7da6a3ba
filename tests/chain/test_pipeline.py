"""The pipelined sync (chain.pipeline) on a real anvil: the same mirror as the serial path, whole transactions
only when either side fails, and the serial path taking over when raw events lie above the cursor."""
from __future__ import annotations

import json
import time

import pytest
from django.db import connection, transaction

from chain import fetch, local, pipeline, sync
from chain.models import BlockHash, EventSyncCursor
from chain.rpc import get_client
from chain.sync import sync_chain

from .test_sync import assert_mirror_equals_chain, mirror_contents

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

MARKET_ORDERS = 200


@pytest.fixture
def small_transactions(chain_settings, monkeypatch):
    """Requests of a block or two and transactions of up to 6 blocks or about 150 logs: the module's market
    (about 750 logs in 22 blocks) makes many of both."""
    chain_settings.CHAINS = {**chain_settings.CHAINS, "bsc": {**chain_settings.CHAINS["bsc"], "batch_blocks": 6}}
    monkeypatch.setattr(fetch, "FIRST_CHUNK_BLOCKS", 1)
    monkeypatch.setattr(fetch, "CHUNK_LOGS", 40)
    monkeypatch.setattr(pipeline, "TARGET_LOGS", 150)
    monkeypatch.setattr(pipeline, "COMMIT_SECONDS", 0)
    monkeypatch.setattr(pipeline, "LONGEST_SECONDS", 0)  # a transaction may end inside a burst too
    monkeypatch.setattr(sync, "PIPELINE_MIN_BLOCKS", 1)
    return chain_settings


def test_a_transaction_ends_after_a_burst_at_a_quiet_batch_not_inside_it():
    """Ending inside a burst writes each order it created before the commit and settled after it twice (copied, then
    updated under the orders table's indexes), and leaves the burst's writing for after the last answer."""
    from chain.config import get_chain_config
    from chain.events import Log
    from chain.fetch import Batch

    cfg = get_chain_config("bsc")

    def batch(logs: int, blocks: int = cfg.batch_blocks) -> Batch:
        return Batch(1, blocks, None, [Log(1, "0x", 0, "0x", i, "0x", "escrow", "OrderCreated", {})
                                       for i in range(logs)])

    def open_after(seconds: float, logs: int, blocks: int = cfg.batch_blocks) -> pipeline._Open:
        """A transaction of `logs` logs over `blocks` blocks, opened `seconds` ago (and just now for 0)."""
        return pipeline._Open(1, None, logs=logs, blocks=blocks, opened=time.monotonic() - seconds)

    busy, quiet = batch(pipeline.QUIET_LOGS), batch(pipeline.QUIET_LOGS - 1)
    assert not open_after(0, pipeline.BURST_LOGS - 1).full(cfg, quiet), "neither a burst nor a second yet"
    assert open_after(0, pipeline.BURST_LOGS).full(cfg, quiet), "a burst, then a quiet batch: written at once"
    assert open_after(pipeline.COMMIT_SECONDS, 10).full(cfg, quiet), "a sparse stretch: about once a second"
    assert not open_after(pipeline.COMMIT_SECONDS, pipeline.BURST_LOGS).full(cfg, busy), "inside a burst"
    assert open_after(pipeline.LONGEST_SECONDS, pipeline.BURST_LOGS).full(cfg, busy), "a burst going on for long"
    assert open_after(0, pipeline.TARGET_LOGS).full(cfg, busy), "a dense history: at TARGET_LOGS"
    assert not open_after(pipeline.LONGEST_SECONDS, pipeline.BURST_LOGS, blocks=cfg.batch_blocks - 1).full(
        cfg, quiet), "fewer than batch_blocks blocks"


def _client_backends() -> set[int]:
    with connection.cursor() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND backend_type = 'client backend'")
        return {row[0] for row in cur.fetchall()}


def assert_no_backend_left(before: set[int]) -> None:
    """The writer's connection is closed with the run (its backend leaves pg_stat_activity shortly after)."""
    deadline = time.monotonic() + 10
    while _client_backends() - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _client_backends() - before == set()


def test_pipelined_sync_writes_the_same_mirror_as_the_serial_path(small_transactions, chain_market, anvil_node,
                                                                   deployment, monkeypatch):
    backends = _client_backends()
    committed = []
    real_advance = pipeline.advance_cursor
    monkeypatch.setattr(pipeline, "advance_cursor", lambda *a, **k: committed.append(1) or real_advance(*a, **k))
    piped = sync_chain("bsc")
    assert len(piped.ranges) >= 10 and len(committed) >= 3, "many requests, several transactions"
    assert len(piped.ranges) > len(committed), "transactions of several requests"
    assert_no_backend_left(backends)
    assert_mirror_equals_chain(anvil_node, deployment)
    pipelined = mirror_contents()
    stats = _rollups()

    local.reset_mirror()
    with transaction.atomic():  # inside a caller's transaction the sync runs serially
        serial = sync_chain("bsc")
    assert (serial.events, serial.to_block) == (piped.events, piped.to_block)
    contents = mirror_contents()
    # Block hashes are kept per transaction's window, and the two paths cut transactions differently:
    # both keep only canonical hashes, which the reorg check compares.
    contents.pop("chain_block_hashes"), pipelined.pop("chain_block_hashes")
    assert contents == pipelined
    assert _rollups() == stats
    for number, stored in BlockHash.objects.filter(chain="bsc").values_list("number", "hash"):
        assert anvil_node.call("eth_getBlockByNumber", [hex(number), False])["hash"] == stored


def _rollups() -> list:
    with connection.cursor() as cur:
        cur.execute("SELECT to_jsonb(s) - 'id' FROM chain_daily_order_stats s ORDER BY chain, token_symbol, day")
        stats = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT chain, paused FROM chain_state ORDER BY chain")
        return [stats, cur.fetchall()]


def test_pipelined_sync_with_the_order_cache_dropped_between_transactions(small_transactions, chain_market,
                                                                          anvil_node, deployment, monkeypatch):
    monkeypatch.setattr(pipeline, "CACHE_ORDERS", 20)  # dropped after almost every transaction
    result = sync_chain("bsc")
    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)


def test_pipelined_sync_failing_while_folding_rolls_back_the_open_transaction_only(
        small_transactions, chain_market, anvil_node, deployment, monkeypatch):
    monkeypatch.setattr(pipeline, "TARGET_LOGS", 10**9)  # transactions of 6 blocks, each of several requests
    real_fold = pipeline._fold_batch
    failed_in = []

    def fails_in_the_second_transaction(open_, batch, tokens):
        real_fold(open_, batch, tokens)
        if open_.from_block > deployment.deploy_block and len(open_.ranges) == 2 and not failed_in:
            failed_in.append(open_.from_block)
            raise RuntimeError("fold failed")

    monkeypatch.setattr(pipeline, "_fold_batch", fails_in_the_second_transaction)
    backends = _client_backends()
    with pytest.raises(RuntimeError, match="fold failed"):
        sync_chain("bsc")
    assert failed_in, "the failure came with a transaction open"
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert cursor.last_block == failed_in[0] - 1, "every transaction before the open one committed, not the open one"
    assert "fold failed" in cursor.last_error
    assert_no_backend_left(backends)
    assert_mirror_equals_chain(anvil_node, deployment)  # at the cursor: nothing of the open transaction

    monkeypatch.setattr(pipeline, "_fold_batch", real_fold)
    result = sync_chain("bsc")
    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)


def test_pipelined_sync_failing_to_fetch_mid_run_keeps_whole_transactions_and_the_next_run_completes(
        small_transactions, chain_market, anvil_node, deployment):
    client = get_client("bsc")
    real_get_logs = client.get_logs

    def dies_past_the_timeouts(from_block, *args):
        if from_block >= chain_market.phase_blocks["timeouts"]:
            raise ConnectionError("provider gone")
        return real_get_logs(from_block, *args)

    client.get_logs = dies_past_the_timeouts
    with pytest.raises(ConnectionError):
        sync_chain("bsc")
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert deployment.deploy_block < cursor.last_block < anvil_node.head(), "some transactions committed, not all"
    assert "provider gone" in cursor.last_error
    assert_mirror_equals_chain(anvil_node, deployment)  # raw events, orders, profiles, arbitrators at the cursor

    client.get_logs = real_get_logs
    result = sync_chain("bsc")
    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)


def test_pipelined_sync_hands_over_to_the_serial_path_when_raw_events_lie_above_the_cursor(
        small_transactions, chain_market, anvil_node, deployment, caplog):
    sync_chain("bsc")
    before = mirror_contents()
    # The cursor moved back by hand, without the rollback a re-sync performs: the events above it stay.
    EventSyncCursor.objects.filter(chain="bsc").update(last_block=deployment.deploy_block - 1)

    result = sync_chain("bsc")
    assert "going on serially" in caplog.text
    assert result.events == 0 and result.to_block == anvil_node.head()
    after = mirror_contents()
    hashes_before, hashes_after = set(before.pop("chain_block_hashes")), after.pop("chain_block_hashes")
    assert after == before
    # The serial run may cut its ranges elsewhere (their sizes follow the answers as they come) and keep the hash
    # of another range's last block too: none lost, and each one the chain's own.
    assert hashes_before <= set(hashes_after)
    stored = [json.loads(row) if isinstance(row, str) else row for row in hashes_after]
    real = anvil_node.batch([("eth_getBlockByNumber", [hex(h["number"]), False]) for h in stored])
    assert [h["hash"] for h in stored] == [block["hash"].lower() for block in real]


def test_pipelined_sync_hands_over_to_the_serial_path_when_the_cursor_moves_under_it(
        small_transactions, chain_market, anvil_node, deployment, monkeypatch, caplog):
    real_advance = pipeline.advance_cursor
    moved = []

    def moves_the_cursor_back_once(cfg, cursor, **kwargs):
        real_advance(cfg, cursor, **kwargs)
        if not moved:  # as if someone set it back one block by hand, its raw events kept
            moved.append(cursor.last_block)
            cursor.last_block -= 1
            cursor.save(update_fields=["last_block"])

    monkeypatch.setattr(pipeline, "advance_cursor", moves_the_cursor_back_once)
    result = sync_chain("bsc")
    assert moved and "going on serially" in caplog.text and "the cursor is at" in caplog.text
    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)  # the block applied twice was folded once
