"""Splitting a fetched batch into parts for the pipeline (chain.fetch.split) and sizing the next range
(chain.fetch.next_size): pure, no chain needed."""
from __future__ import annotations

from chain.config import ChainConfig
from chain.events import Log
from chain.fetch import Batch, FetchRules, next_size, split

CFG = ChainConfig(key="bsc", name="BNB Smart Chain", chain_id=56, rpc_url="", rpc_fallback="", escrow="",
                  arbitrator_pool="", start_block=0, confirmations=0, block_time=0.75, poll_seconds=3.0,
                  batch_blocks=10_000)


def _log(block: int, index: int) -> Log:
    return Log(block, f"0x{block:064x}", 1_800_000_000 + block, f"0x{block * 1000 + index:064x}", index,
               "0x" + "11" * 20, "escrow", "OrderDelivered", {"orderId": index})


def _batch(per_block: dict[int, int], to_block: int) -> Batch:
    logs = [_log(block, i) for block, n in sorted(per_block.items()) for i in range(n)]
    return Batch(1, to_block, "0x" + "ff" * 32, logs, {"0xtoken": ("USDT", 6)})


def test_split_cuts_a_big_batch_between_blocks_into_consecutive_parts():
    batch = _batch({2: 30, 3: 30, 5: 30, 6: 30, 9: 30}, to_block=12)
    parts = split(batch, 50)

    assert [(p.from_block, p.to_block) for p in parts] == [(1, 3), (4, 12)]
    assert [len(p.logs) for p in parts] == [60, 90]
    assert [log for p in parts for log in p.logs] == batch.logs
    assert parts[0].to_hash == f"0x{3:064x}", "a part ends at its last log's block, with that block's hash"
    assert parts[-1].to_hash == batch.to_hash
    assert all(p.token_meta is batch.token_meta for p in parts)


def test_split_never_cuts_inside_a_block_and_leaves_small_batches_whole():
    one_block = _batch({4: 500}, to_block=4)
    assert split(one_block, 50) == [one_block]
    small = _batch({2: 30, 3: 30}, to_block=9)
    assert split(small, 50) == [small]


def _spanning(from_block: int, to_block: int, per_block: dict[int, int]) -> Batch:
    logs = [_log(block, i) for block, n in sorted(per_block.items()) for i in range(n)]
    return Batch(from_block, to_block, None, logs)


def test_next_size_grows_eightfold_after_an_empty_range_and_twofold_after_a_sparse_one():
    assert next_size(CFG, _spanning(1, 40, {}), 5_000) == 320
    assert next_size(CFG, _spanning(1, 40, {5: 1}), 5_000) == 80
    # An empty answer narrower than FAST_GROWTH_BLOCKS says little about the next hundreds of blocks: twofold.
    assert next_size(CFG, _spanning(1, 10, {}), 5_000) == 20
    assert next_size(CFG, _spanning(1, 20, {}), 5_000, current=640) == 40
    # Reaching a 5,000-block cap from the first ten blocks takes five requests, not ten.
    size, sizes = 10, []
    while size < 5_000:
        size = next_size(CFG, _spanning(1, size, {}), 5_000, widest=5_000)
        sizes.append(size)
    assert sizes == [20, 40, 320, 2_560, 5_000]
    assert next_size(CFG, _spanning(1, 40, {}), 5_000, empty_growth=FetchRules.before_caps().empty_growth) == 80


def test_next_size_keeps_to_the_density_seen_the_cap_and_batch_blocks():
    assert next_size(CFG, _spanning(1, 100, {50: 2_500}), 5_000) == 200  # 25 logs a block: 200 blocks
    assert next_size(CFG, _spanning(1, 100, {50: 10_000}), 5_000) == 50
    assert next_size(CFG, _spanning(1, 8_000, {}), 5_000) == 10_000, "batch_blocks bounds a range without a cap"
    assert next_size(CFG, _spanning(1, 8_000, {}), 5_000, widest=5_000) == 5_000
    assert next_size(CFG, _spanning(1, 1, {1: 9_000}), 5_000, widest=5_000) == 1, "never below one block"


def test_next_size_compounds_over_a_windows_answers_within_what_each_answers_density_allows():
    # Four ranges of 40 blocks in flight come back empty one after another: the size in use doubles at each
    # (or is eight times the range), so the window reaches the cap within one round trip.
    size = 40
    for _ in range(4):
        size = next_size(CFG, _spanning(1, 40, {}), 5_000, widest=5_000, current=size)
    assert size == 2_560
    assert next_size(CFG, _spanning(1, 40, {}), 5_000, widest=5_000, current=4_000) == 5_000
    # A busy answer keeps the next range to its density, whatever the size in use.
    assert next_size(CFG, _spanning(1, 20, {10: 4_000}), 5_000, current=4_000) == 25
    # A sparse one doubles its own range, whatever the size in use: the busy history may lie right behind it.
    assert next_size(CFG, _spanning(1, 20, {10: 2}), 5_000, current=640) == 40
