"""simulate: from "propose" to the state changes on the action's page (issue 24), on a local anvil.

Each run proposes an owner call (a pause, a treasury change, an owner resolution of a dispute whose arbitrator
deadline passed) through `propose_contract_action`, which simulates it on an anvil fork of the chain at its head,
then renders the action's admin page, which shows the state changes; `simulate_p95_ms` is the p95 of that whole
time (target ≤ 3,000 ms). The baseline is the same proposal and page with today's eth_call simulation only (the fork
step replaced by its fallback), measured in the same run. eoa custody (the owner key): the Safe's path forks the
same way, with one more storage write. Each proposal is rejected after it is timed, so the next starts afresh.
"""
from __future__ import annotations

import os
import time

from .common import bench_env, figure, percentile, staff_login

RUNS = 10
TARGET_MS = 3000.0
NEW_TREASURY = "0x00000000000000000000000000000000000000aa"


def main() -> None:
    from pathlib import Path
    from tempfile import TemporaryDirectory

    os.environ.update(bench_env("simulate"))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.urls import reverse
    from web3 import Web3

    from backoffice.devservices import ANVIL_OWNER_KEY, running_anvil
    from chain import rpc, transactions
    from chain.deploy import get_contract
    from chain.local import deploy_local
    from chain.sync import sync_chain
    from ops.actions import services as actions
    from ops.actions import simulations
    from ops.models import ActionStatus

    with TemporaryDirectory() as tmp, running_anvil("bsc", block_time="") as (_proc, url):
        path = Path(tmp) / "deployment.json"
        data = deploy_local({"bsc": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}}, path=path)["bsc"]
        settings.CHAIN_DEPLOYMENT_FILE = path
        settings.CHAINS = {"bsc": {**settings.CHAINS["bsc"], "owner_mode": "eoa"}}
        settings.OWNER_KEY, settings.OWNER_KEYSTORE = ANVIL_OWNER_KEY, ""
        settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
        rpc.reset_clients()
        transactions.reset_signer()
        users = get_user_model().objects
        alice, _ = users.get_or_create(username="bench-alice", defaults={"is_staff": True, "is_superuser": True})
        bob, _ = users.get_or_create(username="bench-bob", defaults={"is_staff": True, "is_superuser": True})
        # A fresh chain: the previous run's actions and signer nonces describe another one (bench database only).
        actions.forget_local_contract_actions(actor=alice)

        # One dispute whose arbitrator missed the deadline, for the owner resolution.
        w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))
        accounts = w3.eth.accounts
        escrow = get_contract(w3, "P2PEscrow", data["escrow"])
        pool = get_contract(w3, "ArbitratorPool", data["arbitrator_pool"])
        token = get_contract(w3, "TestToken", data["tokens"]["USDT"])

        def send(fn, sender, value=0):
            receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
            assert receipt["status"] == 1, fn.fn_name

        buyer, seller = accounts[10], accounts[11]
        send(token.functions.mint(buyer, 10**24), buyer)
        send(token.functions.approve(escrow.address, 2**256 - 1), buyer)
        for arbitrator in accounts[2:5]:
            send(pool.functions.register(), arbitrator, value=10**17)
        send(escrow.functions.setTimeouts(3600, 3600, 1), accounts[0])
        order_id = escrow.functions.nextOrderId().call()
        send(escrow.functions.createOrder(seller, token.address, 1000 * 10**18), buyer)
        send(escrow.functions.openDispute(order_id, "bafybench"), buyer)
        time.sleep(2)
        w3.provider.make_request("evm_mine", [])
        sync_chain("bsc")

        client = Client()
        staff_login(client, alice)
        cases = {"pause": {}, "set_treasury": {"treasury": NEW_TREASURY},
                 "owner_resolve": {"order_id": order_id, "favor_buyer": True}}

        def propose_and_show(kind: str, params: dict, *, marker: str) -> tuple[float, dict]:
            started = time.perf_counter()
            action = actions.propose_contract_action(actor=alice, chain="bsc", kind=kind, params=params,
                                                     reason="bench: simulate")
            page = client.get(reverse("admin:ops_contractaction_change", args=[action.pk]))
            elapsed = (time.perf_counter() - started) * 1000
            assert page.status_code == 200 and marker in page.content.decode(), (kind, action.proposal_effects)
            actions.reject_contract_action(actor=bob, action=action, reason="bench")
            assert action.status in (ActionStatus.PROPOSED, ActionStatus.REJECTED)
            return elapsed, action.proposal_effects

        fork_times: dict[str, list[float]] = {k: [] for k in cases}
        call_times: dict[str, list[float]] = {k: [] for k in cases}
        real_effects = simulations.proposal_effects

        def eth_call_only(**_):
            return {"method": "eth_call", "fallback": "bench baseline: eth_call only"}

        for _ in range(RUNS):
            for kind, params in cases.items():
                elapsed, fx = propose_and_show(kind, params, marker="What this call changes")
                assert fx and fx.get("method") == "fork", fx
                fork_times[kind].append(elapsed)
                simulations.proposal_effects = eth_call_only
                try:
                    call_times[kind].append(propose_and_show(kind, params, marker="bench baseline")[0])
                finally:
                    simulations.proposal_effects = real_effects

    every_fork = [t for ts in fork_times.values() for t in ts]
    every_call = [t for ts in call_times.values() for t in ts]
    for kind in cases:
        figure(f"simulate_p95_ms_{kind}", percentile(fork_times[kind], 95), "ms",
               baseline=percentile(call_times[kind], 95), p50=round(percentile(fork_times[kind], 50), 1),
               runs=RUNS)
    figure("simulate_p95_ms", percentile(every_fork, 95), "ms", baseline=percentile(every_call, 95), limit=TARGET_MS,
           p50=round(percentile(every_fork, 50), 1), eth_call_p50_ms=round(percentile(every_call, 50), 1),
           runs=len(every_fork), kinds=list(cases))
