"""The read replica, on a real streaming replica of the test server: which pages read it, lag, and the fallbacks.

The module's fixture makes a replica of the test PostgreSQL cluster with pg_basebackup -R after the test database
exists, starts it on a free port and adds the `replica` alias for this module only (every other test runs without
one). The tests are transactional: rows written inside a test's open transaction would never reach a replica.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import threading
import time

import psycopg
import pytest
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from prometheus_client.parser import text_string_to_metric_families

from backoffice import admin_utils, devservices, replica
from backoffice.db_router import (
    ReplicaRouter,
    current_read_alias,
    replica_alias,
    with_replica_reads,
)
from backoffice.testing import register_replica, unregister_replica
from chain.models import Order, OrderStatus
from disputes.models import Blacklist
from disputes.services import blacklist_wallet
from ops.monitoring import metrics
from tests import factories as f

REPLICA_DB = pytest.mark.django_db(transaction=True, databases=[DEFAULT_DB_ALIAS, replica.REPLICA])


class Replica:
    """The running replica: its port and data directory, SQL on it as the superuser, stop and start."""

    def __init__(self, port: int, data_dir):
        self.port, self.data_dir = port, data_dir

    def sql(self, query: str):
        primary = connections[DEFAULT_DB_ALIAS].settings_dict
        with psycopg.connect(host="127.0.0.1", port=self.port, dbname=primary["NAME"], user=primary["USER"],
                             password=primary["PASSWORD"] or None, autocommit=True, connect_timeout=5) as conn:
            return conn.execute(query).fetchone()

    def stop(self) -> None:
        devservices.stop_replica(self.data_dir, mode="immediate")  # a crash: no shutdown checkpoint

    def start(self) -> None:
        devservices.restart_replica(self.data_dir, self.port)


class StallingProxy:
    """A TCP proxy in front of the replica that can stop forwarding without closing anything: to the back office, a
    replica that hangs (packets dropped on an open connection), which a real server cannot be made to do on demand.
    Stalled, it still accepts connections (the kernel does), and neither forwards them nor answers."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closed = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.forwarding.clear()

    def close(self) -> None:
        self.closed = True
        self.forwarding.set()
        for sock in self.sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.sockets.append(client)
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.forwarding.wait()
        if self.closed:
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        self.sockets.append(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.forwarding.wait()  # stalled: what was read is held, and nothing more is read
                if self.closed:
                    return
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture(scope="module")
def replica_server(django_db_setup, django_db_blocker):
    data_dir = devservices.DATA_DIR / "replicas" / f"test-{os.getpid()}" / "data"
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    with django_db_blocker.unblock():
        port = devservices.start_replica(connections[DEFAULT_DB_ALIAS].settings_dict, data_dir)
        register_replica(port)
        server = Replica(port, data_dir)
        try:
            yield server
        finally:
            unregister_replica()
            devservices.stop_replica(data_dir)
            shutil.rmtree(data_dir.parent, ignore_errors=True)


@pytest.fixture
def live_replica(replica_server, settings):
    """The replica replaying and caught up with the primary, a fresh measurement, and the default lag limit."""
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 30
    if replica_server.sql("SELECT pg_is_wal_replay_paused()")[0]:
        replica_server.sql("SELECT pg_wal_replay_resume()")
    replica.wait_for_replay()
    replica.reset()
    yield replica_server
    if replica_server.sql("SELECT pg_is_wal_replay_paused()")[0]:
        replica_server.sql("SELECT pg_wal_replay_resume()")
    replica.reset()


@pytest.fixture
def stalling_replica(live_replica, monkeypatch):
    """The replica alias pointed at the live replica through a StallingProxy; measurements expire after 0.5 s."""
    monkeypatch.setattr(replica, "CHECK_SECONDS", 0.5)
    proxy = StallingProxy(live_replica.port)
    unregister_replica()
    register_replica(proxy.port)
    try:
        yield proxy
    finally:
        proxy.close()
        unregister_replica()
        register_replica(live_replica.port)


def changelist_ids(client) -> set[int]:
    response = client.get(reverse("admin:chain_order_changelist"))
    assert response.status_code == 200
    return {o.pk for o in response.context_data["cl"].result_list}


def tables(ctx: CaptureQueriesContext) -> str:
    return "\n".join(q["sql"] for q in ctx.captured_queries)


# ------------------------------------------------------------------------------------------------ routing rules


def test_router_reads_and_writes_the_primary_outside_a_replica_reads_context():
    router = ReplicaRouter()
    assert router.db_for_read(Order) == DEFAULT_DB_ALIAS
    assert router.db_for_write(Order) == DEFAULT_DB_ALIAS
    assert current_read_alias() == DEFAULT_DB_ALIAS


def test_router_migrates_only_the_primary():
    router = ReplicaRouter()
    assert router.allow_migrate(DEFAULT_DB_ALIAS, "chain") is True
    assert router.allow_migrate(replica.REPLICA, "chain") is False


@pytest.mark.django_db(transaction=True)
def test_replica_alias_is_the_primary_when_no_replica_is_configured(rf):
    assert not replica.configured()
    assert replica.replica_status() == replica.NOT_CONFIGURED
    assert replica_alias() == DEFAULT_DB_ALIAS
    assert with_replica_reads(rf.get("/"), lambda request: current_read_alias()) == DEFAULT_DB_ALIAS


# ------------------------------------------------------------------------------------------------ replica reads


@REPLICA_DB
def test_replica_is_a_streaming_standby_of_the_test_database(live_replica):
    with connections[replica.REPLICA].cursor() as cur:
        cur.execute("SELECT pg_is_in_recovery(), current_database()")
        assert cur.fetchone() == (True, connections[DEFAULT_DB_ALIAS].settings_dict["NAME"])


@REPLICA_DB
def test_replica_connection_has_keepalives_a_tcp_user_timeout_and_a_statement_timeout(live_replica):
    with connections[replica.REPLICA].cursor() as cur:
        cur.execute("SHOW statement_timeout")
        assert cur.fetchone()[0] == "30s"
    with socket.socket(fileno=os.dup(connections[replica.REPLICA].connection.fileno())) as sock:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 10_000


@REPLICA_DB
def test_orders_changelist_reads_the_replica(live_replica, staff_client):
    shown = f.order()
    replica.wait_for_replay()
    live_replica.sql("SELECT pg_wal_replay_pause()")
    hidden = f.order()  # on the primary only: the replica stopped replaying before it
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica, \
            CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
        ids = changelist_ids(staff_client)
    assert shown.pk in ids and hidden.pk not in ids
    assert '"orders"' in tables(on_replica)
    assert '"orders"' not in tables(on_primary)  # the primary only saw the session, the user and its permissions


@REPLICA_DB
def test_orders_changelist_shows_every_row_once_after_the_replica_catches_up(live_replica, staff_client):
    live_replica.sql("SELECT pg_wal_replay_pause()")
    written = {f.order().pk for _ in range(5)}
    live_replica.sql("SELECT pg_wal_replay_resume()")
    replica.wait_for_replay()
    response = staff_client.get(reverse("admin:chain_order_changelist"))
    rows = [o.pk for o in response.context_data["cl"].result_list]
    assert sorted(rows) == sorted(written)  # nothing lost, nothing twice
    assert replica.replica_status().usable


@REPLICA_DB
def test_dashboard_reads_the_replica_and_shows_its_lag(live_replica, staff_client, no_chain):
    f.order(status=OrderStatus.DISPUTED)
    replica.wait_for_replay()
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        response = staff_client.get(reverse("admin:index"))
    assert response.status_code == 200
    assert '"orders"' in tables(on_replica) and '"chain_daily_order_stats"' in tables(on_replica)
    tile = response.content.decode().split('id="tile-db-replica"')[1][:600]
    assert 'data-status="ok"' in tile and re.search(r"lag 0\.\d s", tile) and "read-only pages read the replica" in tile


@REPLICA_DB
def test_dashboard_chart_csv_reads_the_replica(live_replica, staff_client):
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        response = staff_client.get(reverse("admin:dashboard_chart_csv", args=["volume"]))
        body = b"".join(response.streaming_content).decode()
    assert body.startswith("day,orders,completed,volume_usdt,fees_usdt")
    assert '"chain_daily_order_stats"' in tables(on_replica)


@REPLICA_DB
def test_orders_csv_export_reads_the_replica(live_replica, staff_client):
    orders = [f.order() for _ in range(3)]
    replica.wait_for_replay()
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        response = staff_client.post(reverse("admin:chain_order_changelist"),
                                     {"action": "export_csv", "_selected_action": [o.pk for o in orders]})
        lines = b"".join(response.streaming_content).decode().strip().splitlines()
    assert len(lines) == 1 + 3
    assert '"orders"' in tables(on_replica)


def export_orders(client, orders):
    response = client.post(reverse("admin:chain_order_changelist"),
                           {"action": "export_csv", "_selected_action": [o.pk for o in orders]})
    assert response.status_code == 200
    return response


@REPLICA_DB
def test_orders_csv_export_reads_the_primary_when_the_replica_dies_before_its_query(live_replica, staff_client):
    orders = [f.order() for _ in range(3)]
    replica.wait_for_replay()
    assert replica.replica_status(fresh=True).usable  # cached: the export will pick the replica
    live_replica.stop()
    try:
        with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
            response = export_orders(staff_client, orders)
        assert '"orders"' in tables(on_primary)  # the query ran before the view returned, on the primary
        lines = b"".join(response.streaming_content).decode().strip().splitlines()
        assert len(lines) == 1 + 3 and not any("EXPORT FAILED" in line for line in lines)
        assert "failed at an export's start" in replica.replica_status().reason
    finally:
        live_replica.start()


@REPLICA_DB
def test_orders_csv_export_that_loses_the_replica_mid_stream_ends_with_an_error_line(live_replica, staff_client,
                                                                                    monkeypatch):
    monkeypatch.setattr(admin_utils, "EXPORT_CHUNK_ROWS", 2)
    orders = [f.order() for _ in range(5)]
    replica.wait_for_replay()
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        response = export_orders(staff_client, orders)
    assert '"orders"' in tables(on_replica)
    stream = iter(response.streaming_content)
    head = [next(stream) for _ in range(3)]  # the header and the first chunk's two rows, fetched by the view
    live_replica.stop()
    try:
        rest = list(stream)  # the next chunk's fetch meets the dead replica
        lines = b"".join(head + rest).decode().strip().splitlines()
        assert len(lines) == 1 + 2 + 1
        assert lines[-1].startswith("EXPORT FAILED after 2 rows (OperationalError): this file is incomplete.")
        assert "failed mid-export" in replica.replica_status().reason
        again = b"".join(export_orders(staff_client, orders).streaming_content).decode().strip().splitlines()
        assert len(again) == 1 + 5 and "EXPORT FAILED" not in again[-1]  # exporting again reads the primary
    finally:
        live_replica.start()


# ------------------------------------------------------------------------------------------------ the primary


@REPLICA_DB
def test_writes_and_their_reads_go_to_the_primary_inside_replica_reads(live_replica, rf, staff_user):
    wallet = f.wallet()
    live_replica.sql("SELECT pg_wal_replay_pause()")

    def page(request):
        assert current_read_alias() == replica.REPLICA
        entry = blacklist_wallet(actor=staff_user, wallet=wallet, reason="scam reports")  # a service: the primary
        fresh = Blacklist.objects.filter(wallet=wallet).exists()  # a plain read in the context: the replica
        return entry, fresh

    entry, seen_on_replica = with_replica_reads(rf.get("/"), page)
    assert entry.pk and not seen_on_replica
    assert Blacklist.objects.using(DEFAULT_DB_ALIAS).filter(wallet=wallet).count() == 1


@REPLICA_DB
def test_dispute_review_page_reads_the_primary(live_replica, staff_client):
    live_replica.sql("SELECT pg_wal_replay_pause()")
    disputed = f.order(status=OrderStatus.DISPUTED)  # not on the replica
    response = staff_client.get(reverse("admin:disputes_disputedorder_review", args=[disputed.pk]))
    assert response.status_code == 200 and f"#{disputed.onchain_id}" in response.content.decode()
    queue = staff_client.get(reverse("admin:disputes_disputedorder_changelist"))
    assert disputed.pk in {o.pk for o in queue.context_data["cl"].result_list}  # the queue reads the primary too


@REPLICA_DB
def test_changelist_post_runs_on_the_primary(live_replica, staff_client):
    live_replica.sql("SELECT pg_wal_replay_pause()")
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica, \
            CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
        response = staff_client.post(reverse("admin:chain_order_changelist"), {"action": "export_csv"})
    assert response.status_code == 200  # nothing selected: the list again, drawn from the primary
    assert on_replica.captured_queries == [] and '"orders"' in tables(on_primary)


# ------------------------------------------------------------------------------------------------ lag and fallback


@REPLICA_DB
def test_replica_lag_is_zero_while_the_primary_is_idle(live_replica):
    f.order()
    replica.wait_for_replay()
    time.sleep(1.5)
    status = replica.replica_status(fresh=True)
    replay_age = live_replica.sql("SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())")[0]
    # A naive lag (time since the last replayed commit) grows while nothing is written; ours stays zero. (Any
    # commit in the cluster resets the naive figure, so its exact size is not asserted.)
    # The server itself writes a few bytes now and then (the bgwriter's running-transactions record), which the
    # replica replays within milliseconds: "idle" means a lag well under a second, not one that grows.
    assert status.usable and status.lag_seconds < 1.0 and status.lag_seconds < replay_age


@REPLICA_DB
def test_replica_lag_counts_a_commit_whose_wal_is_not_written_yet(live_replica):
    live_replica.sql("SELECT pg_wal_replay_pause()")
    order = f.order()  # synchronous_commit is off on the test cluster: the commit returns before its WAL is written
    status = replica.replica_status(fresh=True)
    assert live_replica.sql(f"SELECT count(*) FROM orders WHERE id = {order.pk}")[0] == 0
    assert status.behind_bytes > 0  # not "caught up": the replica lacks a committed order


@REPLICA_DB
def test_replica_of_an_idle_primary_just_past_a_wal_page_header_is_caught_up(live_replica):
    with connections[DEFAULT_DB_ALIAS].cursor() as cur:
        cur.execute("SELECT pg_switch_wal()")
        cur.execute("SELECT (pg_current_wal_insert_lsn() - pg_current_wal_lsn())::int")
        # The next record goes after the new segment's 40-byte page header: the insert position points there.
        assert cur.fetchone()[0] == 40
    # The server's own background records (autovacuum, a checkpoint) can land between the wait and the check: ask
    # again then, a few times at most. A header still read as "behind" fails every attempt.
    for _ in range(5):
        replica.wait_for_replay(timeout=10)
        replica.reset()
        status = replica.replica_status()
        if status.behind_bytes == 0:
            break
    assert status.usable and status.behind_bytes == 0 and status.lag_seconds == 0


@REPLICA_DB
def test_orders_changelist_falls_back_to_the_primary_when_the_replica_lags(live_replica, staff_client, settings):
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 1
    live_replica.sql("SELECT pg_wal_replay_pause()")
    late = f.order()
    time.sleep(2.5)
    replica.reset()  # forget when this process last saw it caught up: the replay timestamp alone bounds the lag
    status = replica.replica_status()
    assert status.reachable and not status.usable and status.replay_paused
    assert status.lag_seconds > 1 and status.behind_bytes > 0
    assert "DATABASE_REPLICA_MAX_LAG_SECONDS=1" in status.reason
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        assert late.pk in changelist_ids(staff_client)
    assert '"orders"' not in tables(on_replica)


@REPLICA_DB
def test_metrics_report_the_replica_lag_and_whether_pages_use_it(live_replica, client, settings):
    settings.METRICS_TOKEN = token = "metrics-token-for-replica-tests-0123"
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 1

    def scrape() -> dict[str, float]:
        metrics.reset_cache()
        body = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").content.decode()
        return {s.name: s.value for fam in text_string_to_metric_families(body) for s in fam.samples
                if s.name.startswith("db_replica")}

    # What earlier tests wrote has reached the replica. The server's own background writes (autovacuum after a
    # long suite) can land between the wait and the scrape: wait again then, a few times at most. Each attempt
    # forgets the last measurement, or the retries would read the same cached one for CHECK_SECONDS.
    for _ in range(10):
        replica.wait_for_replay()
        replica.reset()
        caught_up = scrape()
        if caught_up["db_replica_behind_bytes"] == 0:
            break
    assert caught_up == {"db_replica_up": 1.0, "db_replica_in_use": 1.0, "db_replica_lag_seconds": 0.0,
                         "db_replica_behind_bytes": 0.0}
    live_replica.sql("SELECT pg_wal_replay_pause()")
    f.order()
    time.sleep(2.5)
    replica.reset()
    lagging = scrape()
    assert lagging["db_replica_up"] == 1.0 and lagging["db_replica_in_use"] == 0.0
    assert lagging["db_replica_lag_seconds"] > 1 and lagging["db_replica_behind_bytes"] > 0


@REPLICA_DB
def test_pages_fall_back_to_the_primary_quickly_when_the_replica_is_killed(live_replica, staff_client,
                                                                           no_chain):
    before = f.order()
    replica.wait_for_replay()
    assert before.pk in changelist_ids(staff_client)  # from the replica; its status is cached as usable
    live_replica.stop()
    try:
        after = f.order()
        started = time.monotonic()
        # The cached status still says usable: the page fails on the replica and runs again on the primary.
        assert {before.pk, after.pk} <= changelist_ids(staff_client)
        status = replica.replica_status()
        assert not status.usable and not status.reachable and "failed mid-page" in status.reason
        replica.reset()  # a fresh check meets the dead server: refused at once, and remembered
        assert {before.pk, after.pk} <= changelist_ids(staff_client)
        assert replica.replica_status().reason.startswith("unreachable")
        dashboard = staff_client.get(reverse("admin:index"))
        tile = dashboard.content.decode().split('id="tile-db-replica"')[1][:600]
        assert dashboard.status_code == 200 and 'data-status="error"' in tile and "not used" in tile
        assert time.monotonic() - started < 5
    finally:
        live_replica.start()
    replica.wait_for_replay()
    replica.reset()
    assert {before.pk, after.pk} <= changelist_ids(staff_client)
    assert replica.replica_status().usable


@REPLICA_DB
def test_pages_read_the_primary_within_seconds_when_the_replica_hangs(stalling_replica, staff_client):
    before = f.order()
    replica.wait_for_replay()
    with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica:
        assert before.pk in changelist_ids(staff_client)  # through the proxy; the connection is kept
    assert '"orders"' in tables(on_replica)
    stalling_replica.stall()
    after = f.order()
    time.sleep(replica.CHECK_SECONDS)  # the status cached as usable expires: the next page checks again
    started = time.monotonic()
    with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
        assert {before.pk, after.pk} <= changelist_ids(staff_client)
    # The check's query on the kept connection gets no answer: its socket is shut down after CHECK_TIMEOUT_SECONDS.
    assert time.monotonic() - started < replica.CHECK_TIMEOUT_SECONDS + 1.5
    assert '"orders"' in tables(on_primary)
    status = replica.replica_status()
    assert not status.usable and status.reason == "unreachable: did not answer within 2 s"
    started = time.monotonic()
    assert after.pk in changelist_ids(staff_client)  # remembered: no page waits on the replica until RETRY_SECONDS
    assert time.monotonic() - started < 1


@REPLICA_DB
def test_other_threads_read_the_primary_while_a_check_waits_on_a_hung_replica(stalling_replica):
    assert replica.replica_status(fresh=True).usable
    stalling_replica.stall()
    time.sleep(replica.CHECK_SECONDS)
    checked: list[replica.ReplicaStatus] = []

    def check() -> None:
        try:
            checked.append(replica.replica_status())  # a new connection in this thread: connect_timeout (2 s)
        finally:
            connections.close_all()

    checker = threading.Thread(target=check)
    checker.start()
    time.sleep(0.5)
    started = time.monotonic()
    meanwhile = replica.replica_status()
    assert time.monotonic() - started < 0.5, "answered at once, not after the 2 s check"
    assert checker.is_alive() and not meanwhile.usable and "reading the primary meanwhile" in meanwhile.reason
    assert replica_alias() == DEFAULT_DB_ALIAS
    checker.join(timeout=10)
    assert not checker.is_alive() and not checked[0].usable and checked[0].reason.startswith("unreachable")

