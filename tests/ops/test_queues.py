"""A queue per job: each chain's sync, contract actions, checks and alerts on their own Celery queue.

The isolation test runs real Celery workers (one per queue, as production runs them) on the real Redis
broker against the test database and a real anvil; only the slow chain's provider is a local proxy that
holds its requests until the test lets them through.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from django.core.management import call_command
from django.db import connection
from django_celery_beat.models import PeriodicTask

from backoffice.celery import app
from backoffice.devservices import running_anvil, stop_process
from backoffice.supervisor import worker_commands
from chain.models import EventSyncCursor
from ops.monitoring import health
from ops.monitoring.schedules import schedules
from tests.local_http import LocalHttpServer

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "0x" + "11" * 20  # no contract there: the sync finds no logs, which is all this test needs


def route(name: str, *args, **kwargs) -> str | None:
    queue = (app.amqp.router.route({}, name, args, kwargs) or {}).get("queue")
    return getattr(queue, "name", queue)


def test_queues_route_each_job_to_its_own_queue():
    assert route("chain.tasks.sync_chain", chain="bsc") == "sync.bsc"
    assert route("chain.tasks.sync_chain", "ethereum") == "sync.ethereum"
    assert route("chain.tasks.reconcile_orders", chain="base", sample=200) == "sync.base"
    assert route("ops.tasks.advance_contract_actions") == "actions"
    assert route("ops.tasks.check_seller_timeouts") == "actions"
    assert route("ops.tasks.check_sync") == "checks"
    assert route("ops.tasks.daily_operations_check") == "checks"
    assert route("disputes.tasks.check_dispute_rate") == "checks"
    assert route("backoffice.alerts.tasks.deliver_alert", 1) == "alerts"


def test_queues_leave_no_task_of_the_back_office_on_the_default_queue():
    app.loader.import_default_modules()
    ours = [name for name in app.tasks if name.split(".")[0] in {"chain", "ops", "disputes", "backoffice"}]
    assert len(ours) > 15
    for name in ours:
        assert route(name, chain="bsc") not in (None, "celery"), name


@pytest.mark.django_db
def test_queues_are_carried_by_every_beat_entry():
    call_command("register_schedules", stdout=io.StringIO())
    entries = dict(PeriodicTask.objects.values_list("name", "queue"))
    assert entries["poll-bsc-events"] == "sync.bsc" and entries["poll-eth-events"] == "sync.ethereum"
    assert entries["reconcile-eth-orders"] == "sync.ethereum"
    assert entries["advance-contract-actions"] == "actions" and entries["check-buyer-timeouts"] == "actions"
    assert entries["check-sync"] == "checks" and entries["sweep-alert-deliveries"] == "alerts"
    assert all(entries[s.name] == s.queue and s.queue != "celery" for s in schedules())
    # An entry registered before the queues existed follows its task's queue (routing is code).
    PeriodicTask.objects.filter(name="check-sync").update(queue=None)
    out = io.StringIO()
    call_command("register_schedules", stdout=out)
    assert "1 moved" in out.getvalue()
    assert PeriodicTask.objects.get(name="check-sync").queue == "checks"


def test_queues_make_run_starts_a_worker_per_chain_one_for_actions_and_one_for_the_rest():
    commands = worker_commands({"CHAINS": "bsc,ethereum,base"})
    consumed = {name: cmd[cmd.index("-Q") + 1] for name, cmd in commands.items()}
    assert consumed == {"worker-bsc": "sync.bsc", "worker-ethereum": "sync.ethereum", "worker-base": "sync.base",
                        "worker-actions": "actions", "worker": "checks,alerts,celery"}
    hostnames = [cmd[cmd.index("-n") + 1] for cmd in commands.values()]
    assert len(set(hostnames)) == len(hostnames)


@pytest.mark.django_db
def test_queues_depth_of_each_queue_in_health_and_metrics(client, settings):
    settings.METRICS_TOKEN = "queue-test-token"
    redis = health.redis_client()
    keys = ["sync.bsc", "actions", "checks\x06\x163"]  # the last: a message sent with priority 3
    # The session's Redis is shared: start from empty queues, whatever another test left there.
    redis.delete(*keys, "checks", "sync.ethereum")
    try:
        redis.rpush("sync.bsc", *["m"] * 7)
        redis.rpush("actions", "m")
        redis.rpush("checks\x06\x163", "m", "m")
        health.reset_cache()
        celery = client.get("/health", HTTP_AUTHORIZATION="Bearer queue-test-token").json()["checks"]["celery"]
        assert celery["queues"]["sync.bsc"] == 7 and celery["queues"]["actions"] == 1
        assert celery["queues"]["checks"] == 2 and celery["queues"]["sync.ethereum"] == 0
        assert set(celery["queues"]) == {"sync.bsc", "sync.ethereum", "actions", "checks", "alerts", "celery"}
        from ops.monitoring import metrics

        metrics.reset_cache()
        body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer queue-test-token").content.decode()
        assert 'celery_tasks_queued{queue="sync.bsc"} 7.0' in body
        assert 'celery_tasks_queued{queue="checks"} 2.0' in body
        assert 'celery_tasks_queued{queue="sync.ethereum"} 0.0' in body
    finally:
        redis.delete(*keys)
        health.reset_cache()


@pytest.mark.django_db
def test_queues_warn_when_one_queue_builds_up(client, settings):
    settings.METRICS_TOKEN = "queue-test-token"
    redis = health.redis_client()
    redis.delete("sync.ethereum")
    try:
        redis.rpush("sync.ethereum", *["m"] * (health.QUEUE_WARNING + 1))
        health.reset_cache()
        celery = client.get("/health", HTTP_AUTHORIZATION="Bearer queue-test-token").json()["checks"]["celery"]
        assert celery["status"] == "warning" and celery["queues"]["sync.ethereum"] == health.QUEUE_WARNING + 1
    finally:
        redis.delete("sync.ethereum")
        health.reset_cache()


@pytest.mark.django_db
def test_queues_a_removed_chains_pile_shows_in_health_metrics_and_dashboard(client, settings):
    """CHAINS no longer names bsc, but its beat entries (until register_schedules runs) kept filling sync.bsc."""
    from backoffice.chain_settings import chains_from_env
    from ops.monitoring import metrics
    from ops.monitoring.dashboard import _health_tiles

    settings.METRICS_TOKEN = "queue-test-token"
    settings.CHAINS = chains_from_env({"CHAINS": "ethereum,base"}, production=False)
    redis = health.redis_client()
    keys = ["sync.bsc", "sync.bsc\x06\x166"]
    redis.delete(*keys)
    redis.hset(health.WORKER_HEARTBEAT_KEY, "queue-test-worker", time.time())  # a worker: only the pile warns
    try:
        redis.rpush("sync.bsc", *["m"] * 40)
        redis.rpush("sync.bsc\x06\x166", "m", "m")  # priority 6: the same queue
        health.reset_cache()
        celery = client.get("/health", HTTP_AUTHORIZATION="Bearer queue-test-token").json()["checks"]["celery"]
        assert celery["status"] == "warning"
        assert celery["queues"]["sync.bsc"] == 42 and celery["unconsumed_queues"] == {"sync.bsc": 42}
        assert celery["queued_tasks"] == sum(celery["queues"].values()) >= 42
        assert celery["unconsumed"].startswith("sync.bsc holds 42 task(s) for a chain not in CHAINS (ethereum, base): "
                                               "no worker consumes it. Run `manage.py register_schedules`")
        assert "celery -A backoffice purge -Q sync.bsc" in celery["unconsumed"]
        # The configured queues are reported as before, empty or not; an unconfigured one only while it holds tasks.
        assert {"sync.ethereum", "sync.base", "actions", "checks", "alerts", "celery"} <= set(celery["queues"])
        tile = next(t for t in _health_tiles() if t.key == "health-celery")
        assert tile.status == "warning" and "sync.bsc holds 42 task(s)" in tile.detail

        metrics.reset_cache()
        body = client.get("/metrics", HTTP_AUTHORIZATION="Bearer queue-test-token").content.decode()
        assert 'celery_tasks_queued{queue="sync.bsc"} 42.0' in body
        assert 'celery_queue_unconsumed{queue="sync.bsc"} 1.0' in body
        assert 'celery_queue_unconsumed{queue="sync.ethereum"}' not in body

        # Purged: nothing left to report.
        redis.delete(*keys)
        health.reset_cache()
        celery = client.get("/health", HTTP_AUTHORIZATION="Bearer queue-test-token").json()["checks"]["celery"]
        assert "sync.bsc" not in celery["queues"] and "unconsumed" not in celery and celery["status"] == "ok"
    finally:
        redis.delete(*keys)
        redis.hdel(health.WORKER_HEARTBEAT_KEY, "queue-test-worker")
        health.reset_cache()
        metrics.reset_cache()


# ------------------------------------------------------------------ real workers


def url_of_the_test_database() -> str:
    d = connection.settings_dict
    auth = quote(d["USER"], safe="") + (":" + quote(d["PASSWORD"], safe="") if d["PASSWORD"] else "")
    return f"postgres://{auth}@{quote(d['HOST'], safe='')}:{d['PORT']}/{d['NAME']}"


class GatedProxy:
    """A JSON-RPC provider that holds every request until `release()`: a chain whose provider hangs."""

    def __init__(self, upstream: str):
        self.upstream, self.gate, self.arrived = upstream, threading.Event(), threading.Event()

        def answer(path, headers, body):
            self.arrived.set()
            self.gate.wait(120)
            reply = requests.post(upstream, data=body, headers={"Content-Type": "application/json"}, timeout=30)
            return reply.status_code, reply.content

        self.server = LocalHttpServer(answer)
        self.url = self.server.url

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.server.close()


def start_worker(name: str, queue: str, env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "backoffice", "worker", "-Q", queue, "-n", name, "--concurrency", "1",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.django_db(transaction=True)
def test_queues_a_slow_chain_delays_neither_another_chains_poll_nor_a_contract_action(tmp_path):
    redis = health.redis_client()
    run = uuid.uuid4().hex[:8]
    fast, slow = f"fast{run}", f"slow{run}"  # queues of this test's own: nothing else consumes or fills them
    with running_anvil("bsc", block_time="") as (_proc, anvil_url):
        requests.post(anvil_url, json={"jsonrpc": "2.0", "id": 1, "method": "anvil_mine", "params": ["0x5"]},
                      timeout=10)
        chain_id = str(int(requests.post(anvil_url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId",
                                                          "params": []}, timeout=10).json()["result"], 16))
        proxy = GatedProxy(anvil_url)
        env = {**os.environ, "DATABASE_URL": url_of_the_test_database(), "CHAINS": f"bsc,ethereum,{fast},{slow}",
               "CHAIN_DEPLOYMENT_FILE": str(tmp_path / "none.json"), "RPC_TIMEOUT_SECONDS": "120",
               "PYTHONUNBUFFERED": "1"}
        for chain, url in ((fast, anvil_url), (slow, proxy.url)):
            prefix = chain.upper()
            env.update({f"{prefix}_RPC_URL": url, f"{prefix}_CHAIN_ID": chain_id, f"{prefix}_CONFIRMATIONS": "0",
                        f"{prefix}_ESCROW_CONTRACT": ADDRESS, f"{prefix}_ARBITRATOR_POOL": ADDRESS})
        # Production's layout: a worker per chain's sync queue, one for contract actions.
        workers = {f"{fast}@test": f"sync.{fast}", f"{slow}@test": f"sync.{slow}", f"actions{run}@test": "actions"}
        logs = {name: tmp_path / f"{name}.log" for name in workers}
        procs = [start_worker(name, queue, env, logs[name]) for name, queue in workers.items()]
        try:
            wait_for(lambda: set(workers) <= {k.decode() for k in redis.hkeys(health.WORKER_HEARTBEAT_KEY)}, 120,
                     "the three workers to start")
            log_text = lambda: "".join(p.read_text() for p in logs.values())  # noqa: E731
            done = lambda task_id: log_text().count(f"[{task_id}] succeeded")  # noqa: E731

            slow_id = app.send_task("chain.tasks.sync_chain", kwargs={"chain": slow}).id
            assert proxy.arrived.wait(60), "the slow chain's sync never reached its provider"
            started = time.monotonic()
            fast_id = app.send_task("chain.tasks.sync_chain", kwargs={"chain": fast}).id
            action_id = app.send_task("ops.tasks.advance_contract_actions").id
            wait_for(lambda: done(fast_id) and done(action_id), 60, "the other chain's poll and the contract action")
            elapsed = time.monotonic() - started
            # Both finished while the slow chain's sync is still waiting on its provider.
            assert not proxy.gate.is_set() and done(slow_id) == 0
            assert elapsed < 30, f"the other chain's poll and the action took {elapsed:.1f} s"
            assert EventSyncCursor.objects.get(chain=fast).last_block > 0
            assert not EventSyncCursor.objects.filter(chain=slow, last_block__gt=0).exists()

            proxy.release()
            wait_for(lambda: done(slow_id), 60, "the slow chain's sync once its provider answers")
            # Nothing lost or duplicated: each task ran once, every queue and the unacked set are empty.
            assert (done(slow_id), done(fast_id), done(action_id)) == (1, 1, 1)
            cursors = EventSyncCursor.objects
            assert cursors.get(chain=slow).last_block == cursors.get(chain=fast).last_block
            for queue in (f"sync.{fast}", f"sync.{slow}"):
                assert redis.llen(queue) == 0
            wait_for(lambda: redis.hlen("unacked") == 0, 10, "the broker's unacked set to empty")
        finally:
            for proc in procs:
                stop_process(proc, timeout=20)
            proxy.close()
            redis.hdel(health.WORKER_HEARTBEAT_KEY, *workers)
