"""Splitting a fetched batch into parts for the pipeline (chain.fetch.split): pure, no chain needed."""
from __future__ import annotations

from chain.events import Log
from chain.fetch import Batch, split


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
