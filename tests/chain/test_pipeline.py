"""The pipelined sync (chain.pipeline) on a real anvil: the same mirror as the serial path, whole transactions
only when either side fails, and the serial path taking over when raw events lie above the cursor."""
from __future__ import annotations

import pytest
from django.db import connection, transaction

from chain import fetch, local, pipeline, sync
from chain.models import BlockHash, ChainEvent, EventSyncCursor
from chain.rpc import get_client
from chain.sync import sync_chain

from .test_sync import assert_mirror_equals_chain, chain_logs, mirror_contents

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

MARKET_ORDERS = 200


@pytest.fixture
def small_transactions(chain_settings, monkeypatch):
    """Requests of a few blocks and transactions of up to 4 blocks or about 150 logs: the module's market
    (about 750 logs in 22 blocks) makes several of both."""
    chain_settings.CHAINS = {**chain_settings.CHAINS, "bsc": {**chain_settings.CHAINS["bsc"], "batch_blocks": 4}}
    monkeypatch.setattr(fetch, "FIRST_CHUNK_BLOCKS", 1)
    monkeypatch.setattr(fetch, "CHUNK_LOGS", 40)
    monkeypatch.setattr(pipeline, "TARGET_LOGS", 150)
    monkeypatch.setattr(sync, "PIPELINE_MIN_BLOCKS", 1)
    return chain_settings


def _backends() -> int:
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cur.fetchone()[0]


def test_pipelined_sync_writes_the_same_mirror_as_the_serial_path(small_transactions, chain_market, anvil_node,
                                                                   deployment, monkeypatch):
    backends = _backends()
    committed = []
    real_advance = pipeline.advance_cursor
    monkeypatch.setattr(pipeline, "advance_cursor", lambda *a, **k: committed.append(1) or real_advance(*a, **k))
    piped = sync_chain("bsc")
    assert len(committed) >= 4, "several transactions"
    assert _backends() == backends, "the writer's connection is closed with the run"
    assert_mirror_equals_chain(anvil_node, deployment)
    pipelined = mirror_contents()

    local.reset_mirror()
    with transaction.atomic():  # inside a caller's transaction the sync runs serially
        serial = sync_chain("bsc")
    assert (serial.events, serial.to_block) == (piped.events, piped.to_block)
    contents = mirror_contents()
    # Block hashes are kept per transaction's window, and the two paths cut transactions differently:
    # both keep only canonical hashes, which the reorg check compares.
    for name in ("chain_block_hashes",):
        contents.pop(name), pipelined.pop(name)
    assert contents == pipelined
    for number, stored in BlockHash.objects.filter(chain="bsc").values_list("number", "hash"):
        assert anvil_node.call("eth_getBlockByNumber", [hex(number), False])["hash"] == stored


def test_pipelined_sync_with_the_order_cache_dropped_between_transactions(small_transactions, chain_market,
                                                                          anvil_node, deployment, monkeypatch):
    monkeypatch.setattr(pipeline, "CACHE_ORDERS", 20)  # dropped after almost every transaction
    result = sync_chain("bsc")
    assert result.to_block == anvil_node.head()
    assert_mirror_equals_chain(anvil_node, deployment)


def test_pipelined_sync_failing_mid_run_keeps_whole_transactions_and_the_next_run_completes(
        small_transactions, chain_market, anvil_node, deployment):
    client = get_client("bsc")
    real_get_logs = client.get_logs
    calls = []

    def dies_after_four_requests(*args):
        calls.append(args)
        if len(calls) > 4:
            raise ConnectionError("provider gone")
        return real_get_logs(*args)

    client.get_logs = dies_after_four_requests
    with pytest.raises(ConnectionError):
        sync_chain("bsc")
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert deployment.deploy_block < cursor.last_block < anvil_node.head(), "some transactions committed, not all"
    assert "provider gone" in cursor.last_error
    stored = sorted(ChainEvent.objects.values_list("tx_hash", "log_index"))
    expected = sorted((log["transactionHash"], int(log["logIndex"], 16))
                      for log in chain_logs(anvil_node, deployment, cursor.last_block))
    assert stored == expected, "exactly the events up to the cursor: the open transaction was rolled back"

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
    assert mirror_contents() == before
