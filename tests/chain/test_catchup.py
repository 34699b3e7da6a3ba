"""A catch-up's progress on a real anvil (its market spread over a longer chain): blocks done of blocks to go,
events so far, rate and finish, run after run, on the Sync cursors page, in the logs and in /metrics."""
from __future__ import annotations

import logging
import re

import pytest

from chain import catchup
from chain.models import ChainEvent, EventSyncCursor, SyncCatchup
from chain.rpc import reset_clients
from chain.stretched import StretchedChain
from chain.sync import sync_chain

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

GAP = 200_000


@pytest.fixture
def behind(chain_settings, chain_market, anvil_node, deployment, faulty_rpc, tmp_path):
    """The module's market with 200,000 empty blocks before its resolutions, served 10 ms away: a catch-up."""
    base, real_head = deployment.deploy_block, anvil_node.head()
    cut = chain_market.phase_blocks["resolve"]
    positions = [r + (GAP if r >= cut else 0) for r in range(base + 1, real_head + 1)]
    stretch = StretchedChain(anvil_node.url, base, positions, positions[-1] + 1_000)
    proxy = faulty_rpc(delay=0.01, stretch=stretch)
    chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(
        tmp_path / "behind.json", rpc_url=proxy.url, rpc_fallback=proxy.url)
    reset_clients()
    return stretch


def test_catchup_progress_counts_blocks_and_events_run_after_run_and_ends_at_the_head(behind, deployment):
    first = sync_chain("bsc", max_blocks=120_000)
    progress = catchup.current("bsc")
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert progress is not None and first.to_block == cursor.last_block < behind.head
    assert (progress.from_block, progress.target_block, progress.last_block) == (
        deployment.deploy_block - 1, behind.head, cursor.last_block)
    assert progress.events == ChainEvent.objects.count() == first.events > 0
    assert progress.blocks_total == behind.head - deployment.deploy_block + 1
    assert 0 < progress.blocks_done < progress.blocks_total
    assert progress.rate > 0 and progress.eta_seconds > 0 and progress.finish_at > progress.updated_at
    assert progress.in_flight >= 1
    text = progress.describe()
    assert f"of {progress.blocks_total:,} blocks" in text and f"{progress.events:,} events" in text
    assert "blocks/s" in text and "done in about" in text

    second = sync_chain("bsc")
    assert second.to_block == behind.head and catchup.current("bsc") is None
    row = SyncCatchup.objects.get(chain="bsc")
    assert row.finished_at is not None and row.last_block == behind.head
    assert row.events == first.events + second.events == ChainEvent.objects.count()

    assert sync_chain("bsc").from_block == behind.head + 1 and catchup.current("bsc") is None, "a poll begins none"


def test_catchup_shows_on_the_sync_cursors_page_in_the_logs_and_in_metrics(behind, staff_client, monkeypatch,
                                                                           caplog):
    from ops.monitoring import metrics

    monkeypatch.setattr(catchup, "SHOW_AFTER_SECONDS", 0)  # any catch-up counts as a long one here
    monkeypatch.setattr(catchup, "LOG_EVERY_SECONDS", 0)
    with caplog.at_level(logging.INFO, logger="chain.catchup"):
        sync_chain("bsc", max_blocks=120_000)
    lines = [r.getMessage() for r in caplog.records if r.name == "chain.catchup"]
    assert any(re.search(r"bsc catching up: 2\d\d,\d\d\d blocks behind", line) for line in lines), lines
    assert any(re.search(r"bsc catching up: \d+\.\d % \([\d,]+ of [\d,]+ blocks", line) for line in lines), lines
    progress = catchup.current("bsc")

    page = staff_client.get("/admin/chain/eventsynccursor/").content.decode()
    assert f"of {progress.blocks_total:,} blocks" in page and f"{progress.events:,} events" in page

    metrics.reset_cache()
    scraped = staff_client.get("/metrics").content.decode()

    def metric(name: str) -> float:
        found = re.search(rf'^{name}\{{chain="bsc"\}} (\S+)$', scraped, re.M)
        assert found, name
        return float(found.group(1))

    assert metric("blockchain_sync_catchup_active") == 1
    assert metric("blockchain_sync_catchup_blocks_done") == progress.blocks_done
    assert metric("blockchain_sync_catchup_blocks_total") == progress.blocks_total
    assert metric("blockchain_sync_catchup_events") == progress.events
    assert metric("blockchain_sync_catchup_eta_seconds") > 0 and metric("blockchain_sync_in_flight") >= 1

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="chain.catchup"):
        sync_chain("bsc")
    assert any(re.search(r"bsc caught up: [\d,]+ blocks and [\d,]+ events in \d+ s", r.getMessage())
               for r in caplog.records), caplog.text
    page = staff_client.get("/admin/chain/eventsynccursor/").content.decode()
    assert f"of {progress.blocks_total:,} blocks" not in page, "over: no longer shown"
    metrics.reset_cache()
    assert re.search(r'^blockchain_sync_catchup_active\{chain="bsc"\} 0\.0$',
                     staff_client.get("/metrics").content.decode(), re.M)


def test_catchup_is_not_shown_before_it_has_lasted_or_is_expected_to_last_a_minute(behind, staff_client):
    sync_chain("bsc", max_blocks=120_000)
    progress = catchup.current("bsc")
    assert progress is not None and not progress.is_long(), "a few seconds at most"
    assert progress.describe() not in staff_client.get("/admin/chain/eventsynccursor/").content.decode()
