"""The event sync on a real anvil: the mirror equals the contract, through reorgs, outages and bad logs."""
from __future__ import annotations

import json
import threading
import time
from decimal import Decimal

import psycopg
import pytest
import requests
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from web3 import Web3

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from chain import mirror
from chain.config import get_chain_config
from chain.deploy import get_contract
from chain.fetch import fetch_batch, token_book
from chain.mirror import insert_events, ts, units
from chain.models import (
    CONTRACT_STATUS,
    Arbitrator,
    BlockHash,
    ChainEvent,
    CloseReason,
    EventSyncCursor,
    Order,
    OrderStatus,
    ReconciliationDrift,
    RpcProvider,
    Token,
    UserProfile,
)
from chain.rpc import get_client, reset_clients
from chain.services import reconcile_orders, resync_from_block
from chain.sync import apply_batch, chain_lock, sync_chain
from tests.local_http import LocalHttpServer

from .conftest import STAKE, Market, selector, topic

pytestmark = [pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

MARKET_ORDERS = 1050
ZERO = "0x" + "0" * 40


# ---------------------------------------------------------------------------- the oracle


def chain_logs(node, deployment, to_block: int) -> list[dict]:
    return node.get_logs(deployment.deploy_block, to_block, [deployment.escrow, deployment.pool])


def assert_mirror_equals_chain(node, deployment) -> None:
    """Compare every mirrored table with the chain at the cursor's block, read through web3 (not the sync)."""
    at = EventSyncCursor.objects.get(chain="bsc").last_block
    w3 = Web3(Web3.HTTPProvider(node.url, request_kwargs={"timeout": 60}))
    escrow = get_contract(w3, "P2PEscrow", deployment.escrow)
    pool = get_contract(w3, "ArbitratorPool", deployment.pool)
    decimals = {address: get_contract(w3, "TestToken", address).functions.decimals().call()
                for address in deployment.tokens.values()}
    symbols = {address: symbol for symbol, address in deployment.tokens.items()}

    # Raw events: exactly eth_getLogs, no orphan, no duplicate.
    logs = chain_logs(node, deployment, at)
    expected_keys = sorted((log["transactionHash"].lower(), int(log["logIndex"], 16)) for log in logs)
    mirrored_keys = sorted(ChainEvent.objects.filter(chain="bsc", decode_error="").values_list("tx_hash", "log_index"))
    assert mirrored_keys == expected_keys
    hashes = {(log["transactionHash"].lower(), int(log["logIndex"], 16)): log["blockHash"].lower() for log in logs}
    stored = ChainEvent.objects.filter(chain="bsc", decode_error="").values_list("tx_hash", "log_index", "block_hash")
    assert all(hashes[(tx, i)] == h for tx, i, h in stored)

    # Orders, one by one, against orders(uint256).
    next_id = escrow.functions.nextOrderId().call(block_identifier=at)
    rows = {o.onchain_id: o for o in Order.objects.filter(chain="bsc")}
    assert sorted(rows) == list(range(1, next_id))
    parties = set()
    # web3 encodes and decodes; one JSON-RPC batch carries the calls, pinned to the cursor's block.
    output_types = [o["type"] for o in escrow.get_function_by_name("orders").abi["outputs"]]
    answers = [w3.codec.decode(output_types, bytes.fromhex(answer[2:])) for answer in node.batch(
        [("eth_call", [{"to": deployment.escrow, "data": escrow.encode_abi("orders", [oid])}, hex(at)])
         for oid in range(1, next_id)])]
    for oid, raw in zip(range(1, next_id), answers, strict=True):
        buyer, seller, token, amount, fee, arbitrator, created, s_dl, b_dl, d_dl, status = raw
        order, token, dec = rows[oid], token.lower(), decimals[token.lower()]
        mirrored = (order.buyer_id, order.seller_id, order.token_address, order.token_symbol, order.amount,
                    order.platform_fee, order.arbitrator_wallet or ZERO, order.status, order.created_at,
                    order.seller_deadline, order.buyer_deadline, order.dispute_deadline)
        expected = (buyer.lower(), seller.lower(), token, symbols[token], units(amount, dec), units(fee, dec),
                    arbitrator.lower(), CONTRACT_STATUS[status], ts(created), ts(s_dl), ts(b_dl) if b_dl else None,
                    ts(d_dl) if d_dl else None)
        assert mirrored == expected, f"order {oid}"
        parties.update((buyer.lower(), seller.lower()))

    # Profiles: one for every party, none left over from another chain history.
    assert set(UserProfile.objects.values_list("wallet", flat=True)) == parties

    # Arbitrators: every registered one, with the pool's figures.
    registered = {"0x" + log["topics"][1][-40:] for log in node.get_logs(
        deployment.deploy_block, at, [deployment.pool], [topic("ArbitratorRegistered(address,uint256,uint256)")])}
    arbitrators = {a.wallet: a for a in Arbitrator.objects.filter(chain="bsc")}
    assert set(arbitrators) == registered
    for wallet, row in arbitrators.items():
        stake, reputation, resolved, _earned, active, _registered_at = pool.functions.arbitrators(
            Web3.to_checksum_address(wallet)).call(block_identifier=at)
        assert (row.reputation, row.total_resolved, row.is_active, row.stake_amount) == (
            reputation, resolved, active, units(stake, 18)), wallet


TABLES = {
    "orders": ("chain, onchain_id", ()),
    "arbitrators": ("chain, wallet", ()),
    "user_profiles": ("wallet", ()),
    "chain_events": ("chain, tx_hash, log_index", ()),
    "chain_block_hashes": ("chain, number", ()),
    "chain_tokens": ("chain, address", ()),
    "event_sync_cursor": ("chain", ("updated_at", "head_block", "head_seen_at")),
}


def mirror_contents() -> dict[str, list]:
    """Every mirror table's rows as JSON, without surrogate ids and poll timestamps."""
    out = {}
    with connection.cursor() as cur:
        for table, (order_by, volatile) in TABLES.items():
            drop = " - ".join(["'id'", *(f"'{c}'" for c in volatile)])
            cur.execute(f"SELECT to_jsonb(t) - {drop} FROM {table} t ORDER BY {order_by}")
            out[table] = [row[0] for row in cur.fetchall()]
    return out


@pytest.fixture
def synced(chain_settings, chain_market, anvil_node, deployment):
    result = sync_chain("bsc")
    assert result.skipped == "" and result.malformed == 0
    return result


def market_tx(market: Market, sender: str, signature: str, *args, value: int = 0):
    return market.esc(sender, signature, *args, value=value)


# ---------------------------------------------------------------------------- a whole market


def test_sync_chain_mirror_equals_the_contract_after_a_market_of_over_1000_orders(synced, chain_market, anvil_node,
                                                                                   deployment):
    head = anvil_node.head()
    assert chain_market.orders >= 1000
    assert synced.to_block == head and synced.malformed == 0 and synced.rolled_back_to is None
    assert synced.events == len(chain_logs(anvil_node, deployment, head))
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert cursor.last_block == head and cursor.last_error == ""
    assert set(Order.objects.values_list("status", flat=True).distinct()) == set(OrderStatus.values)
    assert_mirror_equals_chain(anvil_node, deployment)


def test_sync_chain_derives_close_reasons_and_dispute_details_from_the_events(synced, chain_market):
    fates = chain_market.fates
    reasons = dict(Order.objects.values_list("onchain_id", "close_reason"))
    expected = {"completed": CloseReason.CONFIRMED, "auto_released": CloseReason.AUTO_RELEASED,
                "cancelled": CloseReason.CANCELLED, "expired": CloseReason.SELLER_TIMEOUT,
                "resolved_buyer": CloseReason.ARBITRATOR, "resolved_seller": CloseReason.ARBITRATOR,
                "owner_resolved": CloseReason.OWNER, "funded": None, "delivered": None, "disputed": None}
    assert {oid: reasons[oid] for oid in fates} == {oid: expected[f] for oid, f in fates.items()}
    disputed = Order.objects.filter(disputed_at__isnull=False)
    assert disputed.count() == sum(f in ("disputed", "resolved_buyer", "resolved_seller", "owner_resolved")
                                   for f in fates.values())
    assert not disputed.filter(disputed_by__isnull=True).exists()
    cids = {cid for o in Order.objects.exclude(evidence_cids=[]) for cid in o.evidence_cids}
    assert "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG" in cids
    assert any(cid.startswith("invalid:") for cid in cids)  # the odd strings are flagged, not dropped


def test_sync_chain_mirror_equals_the_contract_after_a_market_driver_run(synced, restore_chain, anvil_node,
                                                                         deployment):
    """The same check on activity from chain.market's MarketDriver (make run's driver), added to the market."""
    market_module = pytest.importorskip("chain.market_bulk")
    driver = market_module.BulkMarketDriver(Web3(Web3.HTTPProvider(anvil_node.url)), deployment.data, seed=3,
                                            url=anvil_node.url)
    created = driver.bulk_orders(1000, per_block=50)
    assert created >= 1000
    result = sync_chain("bsc")
    assert result.to_block == anvil_node.head() and result.malformed == 0
    assert Order.objects.count() >= 2000
    assert_mirror_equals_chain(anvil_node, deployment)


# ---------------------------------------------------------------------------- idempotency


def test_sync_chain_run_twice_changes_nothing(synced, anvil_node):
    before = mirror_contents()
    again = sync_chain("bsc")
    assert again.events == 0 and again.batches == 0
    assert mirror_contents() == before


def test_apply_batch_of_an_applied_range_changes_nothing(synced, deployment, anvil_node):
    before = mirror_contents()
    cfg = get_chain_config("bsc")
    client = get_client("bsc")
    head = anvil_node.head()
    batch = fetch_batch(cfg, client, cfg.start_block, head)
    assert len(batch.logs) == synced.events
    tokens = token_book(cfg, client, batch.logs)

    assert apply_batch(cfg, batch, tokens, head) == (0, 0), "the cursor is already past it"
    # Even with the cursor moved back, the same logs change nothing: raw events are the idempotency key.
    EventSyncCursor.objects.filter(chain="bsc").update(last_block=cfg.start_block - 1)
    assert apply_batch(cfg, batch, tokens, head) == (0, 0)
    with transaction.atomic():
        assert insert_events("bsc", batch.logs) == set()
    assert mirror_contents() == before


def test_fetch_reads_new_tokens_metadata_so_the_apply_makes_no_rpc_call(synced, deployment, anvil_node):
    cfg = get_chain_config("bsc")
    client = get_client("bsc")
    batch = fetch_batch(cfg, client, cfg.start_block, anvil_node.head(), known_tokens=frozenset())
    usdt = deployment.tokens["USDT"]
    assert batch.token_meta[usdt][0] == "USDT"
    decimals = batch.token_meta[usdt][1]
    Token.objects.filter(chain="bsc").delete()

    class NoRpc:
        def batch(self, calls):
            raise AssertionError("the apply read token metadata from the chain")

    assert token_book(cfg, NoRpc(), batch.logs, batch.token_meta).decimals(usdt) == decimals
    assert Token.objects.get(chain="bsc", address=usdt).decimals == decimals
    # Known tokens are not read again.
    again = fetch_batch(cfg, client, cfg.start_block, anvil_node.head(), known_tokens=frozenset({usdt}))
    assert usdt not in again.token_meta


# ---------------------------------------------------------------------------- reorgs


def _fund_and_create(market: Market, buyer: str, seller: str, amounts: list[int]) -> None:
    market.fund_wallets([buyer])
    token = market.d.tokens["USDT"]
    market.node.send([market_tx(market, buyer, "createOrder(address,address,uint256)", seller, token, a)
                      for a in amounts], per_block=1)


def test_sync_chain_reorg_inside_the_window_leaves_no_orphans_and_follows_the_new_chain(
        synced, restore_chain, anvil_node, deployment, chain_market):
    node, market = anvil_node, Market(anvil_node, deployment)
    fork_point = node.head()
    fork = node.snapshot()
    funded = [oid for oid, fate in chain_market.fates.items() if fate == "funded"]
    newcomer_arbitrator = node.accounts[9].lower()
    x, y, z, w = market.spare

    # Chain A: new wallets trade, an old order moves on, a new arbitrator joins.
    _fund_and_create(market, x, y, [5 * 10**18, 6 * 10**18])
    # (Four days have passed in the market: funded orders can only be cancelled or expired now.)
    node.send([market_tx(market, Order.objects.get(onchain_id=oid).seller_id, "cancelOrder(uint256)", oid)
               for oid in (funded[0], funded[2])])
    node.send([(newcomer_arbitrator, deployment.pool, selector("register()"), STAKE)])
    first = sync_chain("bsc")
    assert first.rolled_back_to is None and first.events > 0
    assert UserProfile.objects.filter(wallet__in=[x, y]).count() == 2
    assert Arbitrator.objects.filter(wallet=newcomer_arbitrator).exists()
    assert Order.objects.get(onchain_id=funded[0]).status == OrderStatus.CANCELLED
    a_head = node.head()

    # Chain B from the same parent: other wallets, another old order cancelled, and a longer chain.
    node.revert(fork)
    _fund_and_create(market, z, w, [7 * 10**18])
    node.send([market_tx(market, market.owner, "autoExpireOrder(uint256)", funded[0]),
               market_tx(market, Order.objects.get(onchain_id=funded[1]).seller_id, "cancelOrder(uint256)",
                         funded[1])])
    node.mine(max(0, a_head - node.head()) + 2)
    assert node.head() > a_head

    second = sync_chain("bsc")
    assert second.rolled_back_to is not None and second.rolled_back_to >= fork_point
    assert not UserProfile.objects.filter(wallet__in=[x, y]).exists()
    assert not Arbitrator.objects.filter(wallet=newcomer_arbitrator).exists()
    assert Order.objects.get(onchain_id=funded[0]).status == OrderStatus.EXPIRED
    assert Order.objects.get(onchain_id=funded[1]).status == OrderStatus.CANCELLED
    assert Order.objects.get(onchain_id=funded[2]).status == OrderStatus.FUNDED, "replayed from its events"
    assert EventSyncCursor.objects.get(chain="bsc").last_block == node.head()
    stored = dict(BlockHash.objects.filter(chain="bsc", number__gt=fork_point).values_list("number", "hash"))
    assert stored and all(node.call("eth_getBlockByNumber", [hex(n), False])["hash"] == h for n, h in stored.items())
    assert_mirror_equals_chain(node, deployment)


def test_sync_chain_reorg_onto_a_shorter_chain_rolls_back(synced, restore_chain, anvil_node, deployment):
    node, market = anvil_node, Market(anvil_node, deployment)
    fork = node.snapshot()
    x, y, z, w = market.spare
    _fund_and_create(market, x, y, [1 * 10**18, 2 * 10**18, 3 * 10**18])
    sync_chain("bsc")
    assert UserProfile.objects.filter(wallet=x).exists()

    node.revert(fork)
    _fund_and_create(market, z, w, [4 * 10**18])  # fewer blocks than chain A: the cursor is above the head
    result = sync_chain("bsc")
    assert result.rolled_back_to is not None
    assert not UserProfile.objects.filter(wallet__in=[x, y]).exists()
    assert_mirror_equals_chain(node, deployment)


def test_sync_chain_follows_anvil_reorg_that_drops_the_last_blocks_events(synced, restore_chain, anvil_node,
                                                                          deployment):
    node, market = anvil_node, Market(anvil_node, deployment)
    x, y, *_ = market.spare
    _fund_and_create(market, x, y, [1 * 10**18, 2 * 10**18])
    sync_chain("bsc")
    dropped = Order.objects.order_by("-onchain_id").first().onchain_id
    node.call("anvil_reorg", [3, []])  # the last three blocks (the two createOrder and one approve) re-mined empty
    result = sync_chain("bsc")
    assert result.rolled_back_to is not None
    assert not Order.objects.filter(onchain_id=dropped).exists()
    assert_mirror_equals_chain(node, deployment)


def test_sync_chain_with_three_confirmations_never_mirrors_a_depth_two_reorg(
        chain_settings, chain_market, restore_chain, anvil_node, deployment, tmp_path):
    chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(tmp_path / "conf3.json", confirmations=3)
    reset_clients()
    assert get_chain_config("bsc").confirmations == 3
    node, market = anvil_node, Market(anvil_node, deployment)
    x, y, z, w = market.spare
    market.fund_wallets([x, z])
    node.mine(3)
    fork_point = node.head()
    fork = node.snapshot()
    # Chain A: two blocks with an order each, inside the confirmation window.
    node.send([market_tx(market, x, "createOrder(address,address,uint256)", y, deployment.tokens["USDT"], 10**18)
               for _ in range(2)], per_block=1)
    first = sync_chain("bsc")
    assert first.to_block == fork_point - 1
    before = mirror_contents()

    # A depth-2 reorg: chain B replaces both blocks with other orders.
    node.revert(fork)
    node.send([market_tx(market, z, "createOrder(address,address,uint256)", w, deployment.tokens["USDC"], 10**6)
               for _ in range(2)], per_block=1)
    assert node.head() == fork_point + 2
    again = sync_chain("bsc")
    assert again.rolled_back_to is None and again.events == 0
    assert mirror_contents() == before, "nothing inside the confirmation window was mirrored"

    node.mine(3)
    later = sync_chain("bsc")
    assert later.rolled_back_to is None and later.to_block == fork_point + 2
    assert not UserProfile.objects.filter(wallet=x).exists() and UserProfile.objects.filter(wallet=z).exists()
    assert_mirror_equals_chain(node, deployment)


# ---------------------------------------------------------------------------- RPC outage


def test_sync_chain_completes_through_the_fallback_when_the_primary_dies_mid_sync(
        small_batches, chain_market, restore_chain, anvil_node, deployment, tcp_proxy, tmp_path):
    small_batches.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(
        tmp_path / "proxied.json", rpc_url=tcp_proxy.url, rpc_fallback=anvil_node.url)
    reset_clients()
    client = get_client("bsc")
    assert client.providers[0].url == tcp_proxy.url
    real_get_logs = client.get_logs
    served = []

    killed = threading.Event()

    def get_logs_then_kill_the_primary(*args):
        asked_after_the_kill = killed.is_set()
        logs = real_get_logs(*args)
        served.append((client._local.served_by, asked_after_the_kill))  # this thread's answer, not the last one
        if len(served) == 1:
            tcp_proxy.kill()
            killed.set()
        return logs

    client.get_logs = get_logs_then_kill_the_primary
    result = sync_chain("bsc")

    head = anvil_node.head()
    assert result.batches > 3 and result.to_block == head
    # Ranges already out on the primary when it died may have been answered there; every one asked after, by the
    # fallback.
    assert served[0][0] == "primary" and {role for role, after in served if after} == {"fallback"}
    assert result.events == len(chain_logs(anvil_node, deployment, head))
    providers = {p.role: p for p in RpcProvider.objects.filter(chain="bsc")}
    assert providers["primary"].state == "open" and not providers["primary"].in_use
    assert providers["primary"].opened_at is not None and providers["primary"].last_error
    assert providers["fallback"].state == "closed" and providers["fallback"].in_use
    assert_mirror_equals_chain(anvil_node, deployment)

    # The provider comes back; after the breaker's reset time the next sync runs on the primary again.
    tcp_proxy.start()
    client.providers[0].breaker.reset_seconds = 0.2
    time.sleep(0.25)
    market = Market(anvil_node, deployment)
    _fund_and_create(market, market.spare[0], market.spare[1], [10**18])
    later = sync_chain("bsc")
    assert later.events > 0 and served[-1][0] == "primary"
    providers = {p.role: p for p in RpcProvider.objects.filter(chain="bsc")}
    assert providers["primary"].state == "closed" and providers["primary"].in_use
    assert not providers["fallback"].in_use
    assert_mirror_equals_chain(anvil_node, deployment)


class RangeLimitedRpc(LocalHttpServer):
    """A JSON-RPC forwarder to anvil that refuses eth_getLogs over more than `max_blocks` blocks, as Infura does
    (-32005 "query returned more than 10000 results"): a fault injected in front of the real node."""

    def __init__(self, upstream: str, max_blocks: int):
        self.upstream, self.max_blocks = upstream, max_blocks
        self.refused: list[int] = []
        super().__init__(self._answer)

    def _refusal(self, call) -> dict | None:
        if call.get("method") != "eth_getLogs":
            return None
        query = call["params"][0]
        span = int(query["toBlock"], 16) - int(query["fromBlock"], 16) + 1
        if span <= self.max_blocks:
            return None
        self.refused.append(span)
        return {"jsonrpc": "2.0", "id": call["id"], "error": {
            "code": -32005, "message": "query returned more than 10000 results. Try with this "
                                       f"block range [{query['fromBlock']}, {query['fromBlock']}]."}}

    def _forward(self, body) -> bytes:
        return requests.post(self.upstream, data=json.dumps(body), headers={"Content-Type": "application/json"},
                             timeout=30).content

    def _answer(self, path: str, headers, raw: bytes) -> tuple[int, bytes]:
        body = json.loads(raw)
        if isinstance(body, list):  # each call of a batch on its own, as providers answer them
            return 200, json.dumps([self._refusal(c) or json.loads(self._forward(c)) for c in body]).encode()
        refusal = self._refusal(body)
        return 200, json.dumps(refusal).encode() if refusal else self._forward(body)


def test_sync_halves_ranges_a_provider_refuses_as_too_big_without_failing_over(
        chain_settings, chain_market, anvil_node, deployment, tmp_path):
    proxy = RangeLimitedRpc(anvil_node.url, max_blocks=4)
    try:
        chain_settings.CHAIN_DEPLOYMENT_FILE = deployment.write_variant(
            tmp_path / "limited.json", rpc_url=proxy.url, rpc_fallback=proxy.url)
        reset_clients()
        result = sync_chain("bsc")
    finally:
        proxy.close()
    head = anvil_node.head()
    assert proxy.refused, "the provider refused at least one range"
    assert result.to_block == head and result.events == len(chain_logs(anvil_node, deployment, head))
    assert all(to - frm + 1 <= 4 for frm, to in result.ranges)
    providers = {p.role: p for p in RpcProvider.objects.filter(chain="bsc")}
    assert providers["primary"].state == "closed" and providers["primary"].failures == 0  # not the provider's fault
    assert providers["primary"].in_use
    assert_mirror_equals_chain(anvil_node, deployment)


# ---------------------------------------------------------------------------- database outage


def _terminate(backend_pid: int) -> None:
    s = connection.settings_dict
    with psycopg.connect(host=s["HOST"], port=s["PORT"], user=s["USER"], password=s["PASSWORD"] or None,
                         dbname=s["NAME"], autocommit=True) as other:
        assert other.execute("SELECT pg_terminate_backend(%s)", [backend_pid]).fetchone()[0]


def test_sync_chain_after_the_database_connection_drops_mid_batch_has_no_gap_and_no_duplicate(
        small_batches, chain_market, anvil_node, deployment, monkeypatch):
    real_write_order_lines = mirror.write_order_lines
    calls = []

    def write_order_lines_after_a_dropped_connection(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # two batches committed, the third dies half-written
            _terminate(connection.connection.info.backend_pid)
        return real_write_order_lines(*args, **kwargs)

    monkeypatch.setattr(mirror, "write_order_lines", write_order_lines_after_a_dropped_connection)
    with pytest.raises(Exception) as raised:
        sync_chain("bsc")
    assert "terminat" in str(raised.value).lower() or "connection" in str(raised.value).lower()
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert cursor.last_block < anvil_node.head()
    assert cursor.last_error, "the failure is kept for staff"
    applied = ChainEvent.objects.count()
    assert applied == len(chain_logs(anvil_node, deployment, cursor.last_block)), "only whole batches"

    result = sync_chain("bsc")
    head = anvil_node.head()
    assert result.to_block == head
    assert EventSyncCursor.objects.get(chain="bsc").last_block == head
    assert ChainEvent.objects.count() == applied + result.events == len(chain_logs(anvil_node, deployment, head))
    assert_mirror_equals_chain(anvil_node, deployment)


# ---------------------------------------------------------------------------- malformed logs


def test_sync_chain_records_and_skips_a_malformed_log_and_applies_every_good_one(
        chain_settings, chain_market, anvil_node, deployment):
    client = get_client("bsc")
    real_get_logs = client.get_logs
    injected = []

    order_created = topic("OrderCreated(uint256,address,address,address,uint256,uint256,uint64)")

    def get_logs_with_bad_ones(*args):
        logs = real_get_logs(*args)
        # The first answer holding an order (an earlier one may hold only the deployment's own events).
        if not injected and any(log["topics"][0] == order_created for log in logs):
            middle = len(logs) // 2
            unknown = {**logs[middle], "topics": [topic("Surprise(uint256)"), "0x" + "00" * 32],
                       "transactionHash": "0x" + "ab" * 32, "logIndex": "0x0"}
            created = next(log for log in logs if log["topics"][0] == order_created)
            truncated = {**created, "data": created["data"][:-64], "transactionHash": "0x" + "cd" * 32}
            injected.extend([unknown, truncated])
            logs = logs[:middle] + [unknown] + logs[middle:middle + 3] + [truncated] + logs[middle + 3:]
        return logs

    client.get_logs = get_logs_with_bad_ones
    result = sync_chain("bsc")

    head = anvil_node.head()
    assert result.malformed == 2 and result.to_block == head
    assert result.events == len(chain_logs(anvil_node, deployment, head))
    bad = list(ChainEvent.objects.exclude(decode_error="").order_by("tx_hash"))
    assert [e.tx_hash for e in bad] == ["0x" + "ab" * 32, "0x" + "cd" * 32]
    assert "unknown event topic" in bad[0].decode_error and "data is" in bad[1].decode_error
    assert all(e.event == "" and e.order_id is None and "topics" in e.args for e in bad)
    cursor = EventSyncCursor.objects.get(chain="bsc")
    assert cursor.last_block == head
    assert "2 malformed log(s)" in cursor.last_error and "0x" + "ab" * 32 in cursor.last_error
    assert_mirror_equals_chain(anvil_node, deployment)


# ---------------------------------------------------------------------------- the per-chain lock


def test_sync_chain_second_concurrent_run_is_skipped_as_locked(chain_settings, chain_market, anvil_node, deployment):
    client = get_client("bsc")
    real_get_logs = client.get_logs
    inside, release = threading.Event(), threading.Event()
    outcome = {}

    def slow_get_logs(*args):
        inside.set()
        assert release.wait(10)
        return real_get_logs(*args)

    client.get_logs = slow_get_logs

    def first_sync():
        try:
            outcome["first"] = sync_chain("bsc")
        finally:
            connection.close()

    worker = threading.Thread(target=first_sync)
    worker.start()
    try:
        assert inside.wait(10), "the first sync never reached eth_getLogs"
        second = sync_chain("bsc", client=get_client("bsc"))
        assert second.skipped == "locked" and second.events == 0
    finally:
        release.set()
        worker.join(30)
    assert outcome["first"].skipped == "" and outcome["first"].to_block == anvil_node.head()
    assert sync_chain("bsc").skipped == "", "the lock is released with the run"


def test_chain_lock_held_by_another_connection_makes_sync_skip(chain_settings, chain_market):
    held, release = threading.Event(), threading.Event()

    def holder():
        try:
            with chain_lock("bsc") as got:
                assert got
                held.set()
                release.wait(10)
        finally:
            connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(10)
        assert sync_chain("bsc").skipped == "locked"
        with chain_lock("bsc") as got:
            assert not got
        with chain_lock("ethereum") as got:
            assert got, "the lock is per chain"
    finally:
        release.set()
        thread.join(10)
    assert sync_chain("bsc").skipped == ""


# ---------------------------------------------------------------------------- staff actions


def test_resync_from_block_rolls_back_and_the_next_sync_restores_the_same_mirror(synced, chain_market, staff_user):
    before = mirror_contents()
    # Inside the timeout phase: arbitrators penalised after this block resolved USDC and USDT disputes before it.
    block = chain_market.phase_blocks["timeouts"] + 2
    summary = resync_from_block(actor=staff_user, chain="bsc", block=block, reason="provider served bad logs")
    assert EventSyncCursor.objects.get(chain="bsc").last_block == block - 1
    assert not ChainEvent.objects.filter(block_number__gte=block).exists()
    assert summary["events_removed"] > 0
    audit = AuditLog.objects.get(action="resync_from_block")
    assert audit.actor == staff_user and audit.reason == "provider served bad logs"
    assert audit.after["last_block"] == block - 1

    again = sync_chain("bsc")
    assert again.events == summary["events_removed"]
    assert mirror_contents() == before


def test_resync_from_block_refuses_a_missing_reason_and_a_block_beyond_the_cursor(synced, staff_user):
    last = EventSyncCursor.objects.get(chain="bsc").last_block
    with pytest.raises(ValidationError) as raised:
        resync_from_block(actor=staff_user, chain="bsc", block=last, reason=" ")
    assert "reason" in raised.value.message_dict
    with pytest.raises(ValidationError) as raised:
        resync_from_block(actor=staff_user, chain="bsc", block=last + 2, reason="x")
    assert "block" in raised.value.message_dict
    assert not AuditLog.objects.filter(action="resync_from_block").exists()


def test_reconcile_orders_finds_no_drift_on_a_correct_mirror(synced, chain_market):
    result = reconcile_orders(chain="bsc", sample=None)
    assert result.checked == chain_market.orders and result.drifted_orders == []
    assert not ReconciliationDrift.objects.exists()
    assert not Alert.objects.filter(key="reconciliation:bsc").exists()


def test_reconcile_orders_records_drift_and_raises_an_alert_for_a_corrupted_row(synced, chain_market, anvil_node):
    victim = Order.objects.filter(status=OrderStatus.DISPUTED).order_by("onchain_id").first().onchain_id
    with connection.cursor() as cur:
        cur.execute("UPDATE orders SET amount = amount + 1 WHERE chain = 'bsc' AND onchain_id = %s", [victim])
    result = reconcile_orders(chain="bsc", sample=None)
    assert result.drifted_orders == [victim] and result.confirmed_orders == []
    drift = ReconciliationDrift.objects.get(chain="bsc", onchain_id=victim)
    assert drift.field == "amount" and drift.resolved_at is None
    assert Decimal(drift.mirror_value) - Decimal(drift.chain_value) == 1
    observed = Alert.objects.get(key="reconciliation-observed:bsc")
    assert observed.severity == "P3" and not Alert.objects.filter(key="reconciliation:bsc").exists(), "seen once"
    anvil_node.mine()
    sync_chain("bsc")  # the cursor moves on: the same row read again at a later block
    assert reconcile_orders(chain="bsc", sample=None).confirmed_orders == [victim]
    alert = Alert.objects.get(key="reconciliation:bsc", acknowledged_at__isnull=True)
    assert alert.severity == "P1" and f"#{victim}" in alert.message and "already did" in alert.message

    with connection.cursor() as cur:
        cur.execute("UPDATE orders SET amount = amount - 1 WHERE chain = 'bsc' AND onchain_id = %s", [victim])
    assert reconcile_orders(chain="bsc", sample=None).drifted_orders == []
    assert ReconciliationDrift.objects.get(pk=drift.pk).resolved_at is not None


@pytest.mark.django_db
def test_reconcile_orders_before_the_first_sync_checks_nothing_and_raises_nothing():
    # beat can run the reconciliation before the first poll of a fresh deployment has made a cursor.
    result = reconcile_orders(chain="bsc", sample=None, client=object())
    assert result.checked == 0 and result.drifted_orders == [] and not ReconciliationDrift.objects.exists()
