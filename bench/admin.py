"""admin: the operations dashboard and the orders changelist at 1,000,000 orders, against stock Django.

Server time (Django test Client in process, logged-in superuser) and queries per page of
- `dashboard_p95_ms`: GET /admin/ (tiles + five charts), against the naive dashboard: the runbook §9 SQL
  run directly on the orders table plus the tiles computed with COUNT(*)s over orders;
- `orders_changelist_p95_ms`: /admin/chain/order/;
- `order_search_wallet_p95_ms`: /admin/chain/order/?q=<a buyer wallet>;
- `order_search_txhash_p95_ms`: /admin/chain/order/?q=<a creation tx hash>;
the last three against a stock `ModelAdmin` of the same model and columns on a throw-away AdminSite
(search_fields on the same columns as icontains, default paginator, no list_select_related).
The top-sellers snapshot is refreshed once first, as the refresh-top-sellers beat would have done;
its own time is reported. The seeded database is reused when it already holds the orders.

Then the same pages read from a read replica, against the same pages on the primary (`*_replica_p95_ms`, baseline =
the primary): a streaming replica of the benchmark's cluster made with pg_basebackup -R after the seed (so it
copies the million orders and then streams), waited for until it has replayed the primary's WAL, then measured in
alternating blocks (replica, primary, replica, primary) so that a neighbour's load falls on both. Each figure also
gives the queries the page sent to each database, and the replica's set-up and catch-up time. On one machine the
replica cannot be faster than the primary (same disks, same two cores): the figure shows what a page pays for
reading a replica (the lag check included), not the load it takes off a primary on its own host.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time

from .common import STOCK_PREFIX, figure, million_orders, percentile, staff_login, stock_admin_urlconf, timed_ms

RUNS = 40
STOCK_RUNS = 5
NAIVE_RUNS = 5
COLUMNS = ("onchain_id", "chain", "status", "amount", "token_symbol", "buyer", "seller", "arbitrator_wallet",
           "created_at", "updated_at")

# Runbook §9, verbatim, run on the orders table.
RUNBOOK_SQL = [
    """SELECT DATE(created_at) AS day, COUNT(*) AS orders, COUNT(*) FILTER (WHERE status = 'completed') AS completed,
       COALESCE(SUM(amount) FILTER (WHERE status = 'completed'), 0) AS volume_usdt,
       COALESCE(SUM(platform_fee) FILTER (WHERE status = 'completed'), 0) AS fees_usdt
       FROM orders WHERE created_at > NOW() - INTERVAL '30 days' GROUP BY DATE(created_at) ORDER BY day DESC""",
    """SELECT DATE(created_at) AS day, COUNT(*) AS new_users,
       SUM(COUNT(*)) OVER (ORDER BY DATE(created_at)) AS cumulative_users
       FROM user_profiles WHERE created_at > NOW() - INTERVAL '30 days' GROUP BY DATE(created_at)""",
    """SELECT DATE(created_at) AS day, COUNT(*) AS total_orders,
       COUNT(*) FILTER (WHERE status IN ('disputed','resolved_buyer','resolved_seller')) AS disputes,
       ROUND(100.0 * COUNT(*) FILTER (WHERE status IN ('disputed','resolved_buyer','resolved_seller'))
         / NULLIF(COUNT(*), 0), 1) AS dispute_rate_pct
       FROM orders WHERE created_at > NOW() - INTERVAL '30 days' GROUP BY DATE(created_at) ORDER BY day DESC""",
    """SELECT seller_wallet, u.display_name, COUNT(*) AS orders, SUM(amount) AS total_volume, u.rating
       FROM orders o JOIN user_profiles u ON u.wallet = o.seller_wallet
       WHERE o.status = 'completed' AND o.created_at > NOW() - INTERVAL '30 days'
       GROUP BY seller_wallet, u.display_name, u.rating ORDER BY total_volume DESC LIMIT 10""",
    """SELECT chain, COUNT(*) AS orders, SUM(amount) AS volume FROM orders
       WHERE created_at > NOW() - INTERVAL '30 days' GROUP BY chain""",
]
# The tiles written the obvious way.
NAIVE_TILES_SQL = [
    "SELECT COUNT(*) FROM orders WHERE status = 'disputed'",
    "SELECT MIN(disputed_at) FROM orders WHERE status = 'disputed'",
    "SELECT status, COUNT(*) FROM orders GROUP BY status",
    "SELECT chain, last_block, head_block, updated_at FROM event_sync_cursor",
    "SELECT chain, paused, solvency_ok FROM chain_state",
    "SELECT COUNT(*) FROM ops_incidents WHERE status NOT IN ('resolved', 'postmortem')",
    "SELECT COUNT(*) FROM ops_alerts WHERE acknowledged_at IS NULL",
    "SELECT * FROM ops_secret_schedules",
]


def _stock_urlconf():
    """A stock ModelAdmin of orders: the same columns, Django's filters and search."""
    from django.contrib import admin

    from chain.models import Order

    class StockOrderAdmin(admin.ModelAdmin):
        list_display = COLUMNS
        list_filter = ("chain", "status", "token_symbol", "close_reason", "created_at")
        search_fields = ("buyer__wallet", "seller__wallet", "arbitrator_wallet", "created_tx_hash", "last_tx_hash",
                         "onchain_id")

    return stock_admin_urlconf(Order, StockOrderAdmin)


def main() -> None:
    million_orders()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext

    from chain import rollup
    from chain.models import Order

    with connection.cursor() as cur:
        cur.execute("ANALYZE orders")
        cur.execute("ANALYZE user_profiles")
        cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = 'orders'::regclass")
        orders = cur.fetchone()[0]
    refresh_ms = timed_ms(rollup.refresh_top_sellers, 1)[0]  # what the beat does every 10 minutes

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user, _ = get_user_model().objects.get_or_create(username="bench-admin",
                                                     defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    staff_login(client, user)
    sample = Order.objects.order_by("-created_at").values_list("buyer_id", "created_tx_hash")[1000]
    wallet, tx_hash = sample

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        return len(ctx.captured_queries)

    def get(url: str):
        return lambda: client.get(url)

    # ------------------------------------------------------------ dashboard vs the naive one
    queries("/admin/")
    dashboard_queries = queries("/admin/")
    dashboard = timed_ms(get("/admin/"), RUNS)

    def naive_dashboard():
        with connection.cursor() as cur:
            for sql in RUNBOOK_SQL + NAIVE_TILES_SQL:
                cur.execute(sql)
                cur.fetchall()

    naive_dashboard()
    naive = timed_ms(naive_dashboard, NAIVE_RUNS)
    figure("dashboard_p95_ms", percentile(dashboard, 95), "ms", baseline=percentile(naive, 95), limit=150.0,
           p50=round(statistics.median(dashboard), 3), baseline_p50=round(statistics.median(naive), 3),
           queries_per_page=dashboard_queries, baseline_queries=len(RUNBOOK_SQL + NAIVE_TILES_SQL),
           top_sellers_refresh_ms=round(refresh_ms, 1), orders=orders, runs=RUNS, baseline_runs=NAIVE_RUNS)

    # ------------------------------------------------------------ changelist and searches vs stock ModelAdmin
    pages = [
        ("orders_changelist_p95_ms", "chain/order/", 100.0),
        ("order_search_wallet_p95_ms", f"chain/order/?q={wallet}", 20.0),
        ("order_search_txhash_p95_ms", f"chain/order/?q={tx_hash}", 20.0),
    ]
    with override_settings(ROOT_URLCONF=_stock_urlconf()):
        for name, path, limit in pages:
            ours_url, stock_url = f"/admin/{path}", f"{STOCK_PREFIX}{path}"
            ours_queries, stock_queries = queries(ours_url), queries(stock_url)  # also warms plans and templates
            ours = timed_ms(get(ours_url), RUNS)
            stock = timed_ms(get(stock_url), STOCK_RUNS)
            figure(name, percentile(ours, 95), "ms", baseline=percentile(stock, 95), limit=limit,
                   p50=round(statistics.median(ours), 3), baseline_p50=round(statistics.median(stock), 3),
                   queries_per_page=ours_queries, baseline_queries_per_page=stock_queries, orders=orders,
                   runs=RUNS, baseline_runs=STOCK_RUNS)

    replica_figures(client, orders, wallet)


REPLICA_BLOCKS = 4  # alternating replica / primary blocks of RUNS // 2 requests each


def replica_figures(client, orders: int, wallet: str) -> None:
    from django.conf import settings
    from django.db import DEFAULT_DB_ALIAS, connections
    from django.test.utils import CaptureQueriesContext

    from backoffice import devservices, replica
    from backoffice.testing import register_replica, unregister_replica

    data_dir = devservices.DATA_DIR / "replicas" / f"bench-{os.getpid()}" / "data"
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    started = time.perf_counter()
    port = devservices.start_replica(connections[DEFAULT_DB_ALIAS].settings_dict, data_dir)
    basebackup_s = time.perf_counter() - started
    max_lag = settings.DATABASE_REPLICA_MAX_LAG_SECONDS
    register_replica(port)
    try:
        replay_wait_s = replica.wait_for_replay(timeout=900)
        catch_up_s = time.perf_counter() - started

        def use_replica(on: bool) -> None:
            # A negative limit makes every measured lag too high: the router then reads the primary, after the same
            # (cached) lag check a page pays on the replica.
            settings.DATABASE_REPLICA_MAX_LAG_SECONDS = max_lag if on else -1.0
            # A replica that has replayed no transaction yet has no measurable lag, and the primary's background
            # WAL (running-transactions records) can put it a few bytes behind meanwhile: wait until it is usable.
            deadline = time.monotonic() + 60
            while True:
                replica.reset()
                status = replica.replica_status(fresh=True)
                if status.usable is on or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert status.usable is on, status

        def queries(url: str) -> tuple[int, int]:
            with CaptureQueriesContext(connections[replica.REPLICA]) as on_replica, \
                    CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as on_primary:
                response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
            return len(on_replica.captured_queries), len(on_primary.captured_queries)

        pages = [
            ("dashboard_replica_p95_ms", "/admin/"),
            ("orders_changelist_replica_p95_ms", "/admin/chain/order/"),
            ("order_search_wallet_replica_p95_ms", f"/admin/chain/order/?q={wallet}"),
            ("userprofiles_changelist_replica_p95_ms", "/admin/chain/userprofile/"),
            ("audit_log_changelist_replica_p95_ms", "/admin/audit/auditlog/"),
        ]
        for name, url in pages:
            timings: dict[bool, list[float]] = {True: [], False: []}
            counts = {}
            for block in range(REPLICA_BLOCKS):
                on = block % 2 == 0
                use_replica(on)
                for _ in range(3):  # warm this database's buffers and plans for the page
                    client.get(url)
                counts[on] = queries(url)
                timings[on] += timed_ms(lambda url=url: client.get(url), RUNS // 2)
            use_replica(True)
            status = replica.replica_status(fresh=True)
            ours, primary = timings[True], timings[False]
            figure(name, percentile(ours, 95), "ms", baseline=percentile(primary, 95),
                   p50=round(statistics.median(ours), 3), baseline_p50=round(statistics.median(primary), 3),
                   queries_on_replica=counts[True][0], queries_on_primary=counts[True][1],
                   baseline_queries_on_replica=counts[False][0], baseline_queries_on_primary=counts[False][1],
                   replica_lag_seconds=status.lag_seconds, orders=orders, runs=len(ours), baseline_runs=len(primary))
        figure("replica_catch_up_s", catch_up_s, "s", basebackup_s=round(basebackup_s, 1),
               replay_wait_s=round(replay_wait_s, 1), orders=orders)
    finally:
        settings.DATABASE_REPLICA_MAX_LAG_SECONDS = max_lag
        unregister_replica()
        devservices.stop_replica(data_dir)
        shutil.rmtree(data_dir.parent, ignore_errors=True)
