"""sanctions: re-screening every known wallet when a list changes, and the sync's throughput with screening on.

`rescreen_seconds`: 1,000,000 known wallets (user_profiles, plus arbitrators) against a new 20,000-address list
version naming HITS of them (each with open orders): `rescreen_list_version`, the set operation in PostgreSQL plus
the handling of its hits (blacklist entries, flagged orders, review flags, audit rows), against a Python loop over
the same rows (every known wallet loaded through the ORM, as the other benchmarks' naive baselines are, and looked up
in the version's address set) handling the same hits the same way, in the same run; the same loop over a raw cursor
is reported beside it. Each run is rolled back, so every run screens the same state.

`sync_screened_events_per_s`: the `sync` benchmark's history (100,000 events from anvil) synced from an empty mirror
with screening off (the queueing triggers disabled: the mirror as before screening existed) and on (triggers on, a
20,000-address list version and the chain's oracle in place, and the run timed until every wallet it met is screened
by `screen_new_wallets`, oracle calls included), alternating, best of ROUNDS each.
"""
from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .common import bench_env, figure

WALLETS = 1_000_000
LIST_SIZE = 20_000
HITS = 25  # our wallets the version names (each with two open orders): a bad day, not a normal one
RUNS = 3
ROUNDS = 3
TRIGGERS = (("user_profiles", "user_profiles_sanctions_queue"), ("arbitrators", "arbitrators_sanctions_queue"))


def say(msg: str) -> None:
    print(f"[bench sanctions] {msg}", file=sys.stderr, flush=True)


def main() -> None:
    """The sync first (it starts from an empty mirror), then the re-screen (it seeds its million wallets)."""
    env = bench_env("sanctions")
    tmp = Path(tempfile.mkdtemp(prefix="bench-sanctions-"))
    env["CHAIN_DEPLOYMENT_FILE"] = str(tmp / "deployment.json")
    for key in ("BSC_RPC_URL", "BSC_RPC_FALLBACK", "BSC_ESCROW_CONTRACT", "BSC_ARBITRATOR_POOL", "BSC_START_BLOCK",
                "BSC_SANCTIONS_ORACLE", "SANCTIONS_LIST_URL"):
        env.pop(key, None)
        os.environ.pop(key, None)
    os.environ.update(env)
    import django

    django.setup()
    sync_screened(tmp)
    rescreen()


# ---------------------------------------------------------------------------- re-screening a new version


def _wallet(rng: random.Random) -> str:
    return "0x%040x" % rng.getrandbits(160)


def _seed(rng: random.Random) -> list[str]:
    """WALLETS profiles and 80 arbitrators, once (kept in the bench database); the HITS wallets get open orders."""
    from django.db import connection, transaction

    from chain import seeding

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM user_profiles")
        if cur.fetchone()[0] != WALLETS:
            say(f"seeding {WALLETS:,} wallets")
            seeding.reset()
            cur.execute("TRUNCATE sanctions_screenings")
            _triggers(False)  # the re-screen reads the mirror, not the screening queue: not worth filling here
            try:
                with transaction.atomic(), cur.connection.cursor().copy(
                        "COPY user_profiles (wallet, created_at, first_seen_chain) FROM STDIN") as copy:
                    for _ in range(WALLETS):
                        copy.write(f"{_wallet(rng)}\t2026-01-01 00:00:00+00\tbsc\n")
                cur.execute("INSERT INTO arbitrators (chain, wallet) SELECT 'bsc', '0x' || lpad(to_hex(n), 40, 'a') "
                            "FROM generate_series(1, 80) AS n")
            finally:
                _triggers(True)
            cur.execute("ANALYZE user_profiles; ANALYZE arbitrators")
        cur.execute("SELECT wallet FROM user_profiles ORDER BY id LIMIT %s", [HITS])
        hits = [row[0] for row in cur.fetchall()]
        cur.execute("SELECT count(*) FROM orders")
        if cur.fetchone()[0] == 0:
            # Two open orders each (a funded one bought, a disputed one sold), against the last profiles.
            cur.execute("SELECT wallet FROM user_profiles ORDER BY id DESC LIMIT %s", [HITS])
            others = [row[0] for row in cur.fetchall()]
            cur.execute(
                "INSERT INTO orders (chain, onchain_id, buyer_wallet, seller_wallet, token_address, token_symbol, "
                "amount, status, created_tx_hash, last_tx_hash) "
                "SELECT 'bsc', n, CASE WHEN n %% 2 = 0 THEN h ELSE o END, CASE WHEN n %% 2 = 0 THEN o ELSE h END, "
                "'0x' || repeat('d', 40), 'USDT', 100 + n, CASE WHEN n %% 2 = 0 THEN 'funded' ELSE 'disputed' END, "
                "'0x' || lpad(to_hex(n), 64, '0'), '0x' || lpad(to_hex(n), 64, '0') "
                "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS t(h, o, i), generate_series(0, 1) AS g "
                "CROSS JOIN LATERAL (SELECT (i * 2 + g)::bigint AS n) AS k", [hits, others])
    return hits


def _version(rng: random.Random, hits: list[str]):
    """A first version of a list (every entry new): LIST_SIZE addresses, HITS of them ours."""
    from django.db import connection

    from disputes.models import SanctionsListVersion

    version = SanctionsListVersion.objects.create(list_key="bench", source="bench", format="address_list",
                                                  sha256="%064x" % rng.getrandbits(256), entry_count=LIST_SIZE,
                                                  imported_by_label="system:bench")
    addresses = hits + [_wallet(rng) for _ in range(LIST_SIZE - len(hits))]
    with connection.cursor() as cur, cur.connection.cursor().copy(
            "COPY sanctions_entries (version_id, address, assets, sdn_uid, sdn_name) FROM STDIN") as copy:
        for address in addresses:
            copy.write_row((version.pk, address, ["ETH"], None, ""))
    with connection.cursor() as cur:
        cur.execute("ANALYZE sanctions_entries")
    return version


def _rolled_back(fn):
    """fn() timed inside a transaction that is then rolled back: (seconds, result)."""
    from django.db import transaction

    with transaction.atomic():
        started = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    return seconds, result


def _added(version) -> dict:
    from disputes.models import SanctionsEntry

    entries = {e.address: e for e in SanctionsEntry.objects.filter(version=version)}
    previous = set(SanctionsEntry.objects.filter(version_id=version.previous_id).values_list("address", flat=True))
    return {a: e for a, e in entries.items() if a not in previous}


def _handle(version, added: dict, found: set):
    from disputes.models import SanctionsHitSource
    from disputes.sanctions.services import Candidate, record_sanctions_hits

    return record_sanctions_hits([Candidate(wallet=w, source=SanctionsHitSource.LIST, version=version,
                                            sdn_uid=added[w].sdn_uid, sdn_name=added[w].sdn_name)
                                  for w in sorted(found)])


def _python_loop(version):
    """The naive re-screen, as the house's other baselines are written: every known wallet loaded through the ORM and
    looked up in the version's new addresses in Python, then the same handling of the hits."""
    from chain.models import Arbitrator, UserProfile

    added = _added(version)
    found = set()
    for model in (UserProfile, Arbitrator):
        for row in model.objects.order_by().iterator(chunk_size=10_000):
            if row.wallet in added:
                found.add(row.wallet)
    return _handle(version, added, found)


def _raw_loop(version):
    """The same loop at its cheapest: wallets streamed as plain tuples through a cursor (a reference, not the
    baseline)."""
    from django.db import connection

    added = _added(version)
    found = set()
    with connection.cursor() as cur:
        for table in ("user_profiles", "arbitrators"):
            cur.execute(f"SELECT wallet FROM {table}")
            while rows := cur.fetchmany(10_000):
                found.update(wallet for (wallet,) in rows if wallet in added)
    return _handle(version, added, found)


def rescreen() -> None:
    from django.db import connection

    from disputes.sanctions.services import RESCREEN_SQL, rescreen_list_version

    rng = random.Random(11)
    hits = _seed(rng)
    with connection.cursor() as cur:  # the previous run's bench version (this database is the bench's own)
        cur.execute("DELETE FROM sanctions_entries WHERE version_id IN (SELECT id FROM sanctions_list_versions "
                    "WHERE list_key = 'bench')")
        cur.execute("DELETE FROM sanctions_list_versions WHERE list_key = 'bench'")
    version = _version(rng, hits)
    ours, naive, raw, found = [], [], [], None
    for _ in range(RUNS):
        seconds, result = _rolled_back(lambda: rescreen_list_version(version, actor="system:bench"))
        ours.append(seconds)
        found = len(result)
        seconds, result = _rolled_back(lambda: _python_loop(version))
        naive.append(seconds)
        assert len(result) == found == HITS, (len(result), found)
        seconds, result = _rolled_back(lambda: _raw_loop(version))
        raw.append(seconds)
        assert len(result) == HITS
    with connection.cursor() as cur:  # the set operation alone (what the re-screen does before handling hits)
        started = time.perf_counter()
        cur.execute(RESCREEN_SQL, {"new": version.pk, "prev": None})
        matched = len(cur.fetchall())
        query = time.perf_counter() - started
        cur.execute("EXPLAIN " + RESCREEN_SQL, {"new": version.pk, "prev": None})
        plan = " / ".join(row[0].strip() for row in cur.fetchall()[:6])
    say(f"re-screen runs {[round(x, 3) for x in ours]} s, ORM loop {[round(x, 3) for x in naive]} s, raw cursor "
        f"loop {[round(x, 3) for x in raw]} s; plan: {plan}")
    figure("rescreen_seconds", statistics.median(ours), "s", baseline=statistics.median(naive), limit=10.0,
           wallets=WALLETS + 80, list_entries=LIST_SIZE, hits=found, runs=[round(x, 3) for x in ours],
           orm_loop_runs=[round(x, 3) for x in naive], raw_cursor_loop_runs=[round(x, 3) for x in raw],
           ratio_to_raw_cursor_loop=round(statistics.median(raw) / statistics.median(ours), 2),
           set_operation_seconds=round(query, 3), matched=matched)


# ---------------------------------------------------------------------------- the sync with screening on


def _triggers(enabled: bool) -> None:
    from django.db import connection

    with connection.cursor() as cur:
        for table, trigger in TRIGGERS:
            cur.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER {trigger}")


def _fresh_mirror() -> None:
    from django.db import connection

    from chain import local

    local.reset_mirror()
    with connection.cursor() as cur:
        cur.execute("TRUNCATE sanctions_screenings, sanctions_oracle_checks")


def sync_screened(tmp: Path) -> None:
    from django.core.exceptions import ValidationError
    from web3 import Web3

    from backoffice import devservices
    from chain import deploy, rpc
    from chain.models import UserProfile
    from chain.sync import sync_chain
    from disputes.models import SanctionsScreening
    from disputes.sanctions.services import import_sanctions_list, screen_new_wallets

    from .sync import build_history

    proc, url = devservices.start_anvil("bsc", block_time="", extra=["--disable-block-gas-limit", "--prune-history"])
    try:
        w3, deployment, _ = build_history(url, tmp)
        rpc.reset_clients()
        # The chain's oracle lists two of the market's traders; a list version of LIST_SIZE names a third.
        traders = [a.lower() for a in w3.eth.accounts[8:40]]
        oracle = deploy.get_contract(w3, "SanctionsOracle", deployment["sanctions_oracle"])
        tx = oracle.functions.addToSanctionsList([Web3.to_checksum_address(a) for a in traders[:2]]).transact(
            {"from": w3.eth.accounts[0]})
        w3.eth.wait_for_transaction_receipt(tx)
        rng = random.Random(5)
        listed = "\n".join([traders[2]] + [_wallet(rng) for _ in range(LIST_SIZE - 1)]) + "\n"
        _fresh_mirror()
        try:
            import_sanctions_list(actor="system:bench", data=listed.encode(), source="sanctioned_addresses_ETH.txt",
                                  force=True, force_reason="benchmark list")
        except ValidationError:
            pass  # the same list as in an earlier run of this bench: it is the current version already
        off, on, detail = [], [], {}
        for _ in range(ROUNDS):
            _fresh_mirror()
            _triggers(False)
            try:
                started = time.monotonic()
                result = sync_chain("bsc", max_seconds=10**9)
                off.append((result.events / (time.monotonic() - started), result.events))
            finally:
                _triggers(True)
            _fresh_mirror()
            started = time.monotonic()
            result = sync_chain("bsc", max_seconds=10**9)
            synced = time.monotonic() - started
            screened = screen_new_wallets(max_seconds=10**9)
            seconds = time.monotonic() - started
            assert not SanctionsScreening.objects.pending().exists()
            on.append((result.events / seconds, result.events))
            detail = {"wallets": screened.screened, "oracle_requests": screened.oracle_requests,
                      "hits": len(screened.hits), "sync_seconds": round(synced, 2),
                      "screening_seconds": round(seconds - synced, 3),
                      "profiles": UserProfile.objects.count()}
            say(f"round: off {off[-1][0]:,.0f} events/s, on {on[-1][0]:,.0f} events/s ({detail})")
        best_off, best_on = max(off), max(on)
        figure("sync_screened_events_per_s", best_on[0], "events/s", baseline=best_off[0], higher_is_better=True,
               events=best_on[1], rounds=ROUNDS, on=[round(r) for r, _ in on], off=[round(r) for r, _ in off],
               **detail)
    finally:
        proc.terminate()
