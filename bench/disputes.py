"""disputes: the dispute queue's first page and the three RB-04 reports at 1,000,000 orders (50,000 disputed).

`dispute_queue_p95_ms` is the server time (Django test Client, logged-in superuser) of
/admin/disputes/disputedorder/ against a stock `ModelAdmin` of the same queue served the same way from a
throw-away AdminSite: the same rows (disputed, oldest first), the same page size, the same columns, a filter
for each of the queue's (chain, age, amount, arbitrator, assignee; Django's own where it has one) and the
same search fields, with Django's paginator, row rendering and navigation. `rb04_reports_p95_ms` is one pass
over the three reports (dispute rate, repeat sellers and buyers, new accounts) against the naive ORM approach
in the same run.
The seeded database is reused when it already holds the orders (seeding takes a few minutes).
"""
from __future__ import annotations

import statistics
from collections import Counter
from datetime import timedelta

from .common import STOCK_PREFIX, figure, million_orders, percentile, staff_login, stock_admin_urlconf, timed_ms

RUNS = 30
NAIVE_RUNS = 3
QUEUE = "/admin/disputes/disputedorder/"
STOCK = f"{STOCK_PREFIX}disputes/disputedorder/"
QUEUE_COLUMNS = ("onchain_id", "chain", "disputed_at", "amount", "token_symbol", "buyer", "seller", "arbitrator_wallet",
                 "dispute_deadline", "evidence_cids")


def _stock_urlconf():
    """A stock ModelAdmin of the same queue."""
    from django.contrib import admin

    from disputes.admin_review import AgeFilter, AmountFilter, DisputeQueueAdmin
    from disputes.models import DisputedOrder

    class StockQueueAdmin(admin.ModelAdmin):
        list_display = QUEUE_COLUMNS
        list_filter = ("chain", AgeFilter, AmountFilter, "arbitrator_wallet", "dispute_case__assignee")
        search_fields = ("onchain_id", "buyer__wallet", "seller__wallet", "arbitrator_wallet", "created_tx_hash",
                         "last_tx_hash")
        list_per_page = DisputeQueueAdmin.list_per_page
        ordering = ("disputed_at",)

        def get_queryset(self, request):
            return super().get_queryset(request).filter(status="disputed").order_by("disputed_at")

    return stock_admin_urlconf(DisputedOrder, StockQueueAdmin)


def _naive_reports(now) -> dict:
    """What RB-04 looks like written without SQL: load rows into Python and count them there."""
    from chain.models import Order, UserProfile

    statuses = list(Order.objects.filter(created_at__gt=now - timedelta(hours=24)).values_list("status", flat=True))
    rate = (len(statuses), sum(s == "disputed" for s in statuses))
    disputed = list(Order.objects.filter(status="disputed", created_at__gt=now - timedelta(days=7)))
    offenders = {}
    for role in ("seller_id", "buyer_id"):
        top = [(w, n) for w, n in Counter(getattr(o, role) for o in disputed).most_common() if n >= 2][:10]
        offenders[role] = [(w, n, UserProfile.objects.get(wallet=w).is_blacklisted) for w, n in top]
    new_accounts = []
    for profile in UserProfile.objects.filter(created_at__gt=now - timedelta(days=7)):
        theirs = [o.status for o in Order.objects.filter(buyer=profile, created_at__gte=profile.created_at)]
        theirs += [o.status for o in Order.objects.filter(seller=profile, created_at__gte=profile.created_at)]
        bad = sum(s in ("disputed", "resolved_buyer", "resolved_seller") for s in theirs)
        if len(theirs) >= 3 and 100 * bad / len(theirs) >= 30:
            new_accounts.append((profile.wallet, len(theirs), bad))
    return {"rate": rate, "offenders": offenders, "new_accounts": sorted(new_accounts, key=lambda r: -r[2] / r[1])[:20]}


def main() -> None:
    million_orders()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client, override_settings
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from chain.models import Order
    from disputes import selectors

    orders = Order.objects.count()
    disputed = Order.objects.filter(status="disputed").count()

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    user, _ = get_user_model().objects.get_or_create(username="bench-disputes",
                                                     defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    staff_login(client, user)

    # ------------------------------------------------------------ queue vs stock ModelAdmin
    with override_settings(ROOT_URLCONF=_stock_urlconf()):
        for url in (QUEUE, STOCK):  # warm caches, templates and plans
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code)
        queries = {}
        for name, url in (("queue", QUEUE), ("stock", STOCK)):
            with CaptureQueriesContext(connection) as ctx:
                client.get(url)
            queries[name] = len(ctx.captured_queries)
        queue = timed_ms(lambda: client.get(QUEUE), RUNS)
        stock = timed_ms(lambda: client.get(STOCK), RUNS)
    figure("dispute_queue_p95_ms", percentile(queue, 95), "ms", baseline=percentile(stock, 95), limit=30.0,
           p50=round(statistics.median(queue), 3), baseline_p50=round(statistics.median(stock), 3),
           queries_per_page=queries["queue"], baseline_queries_per_page=queries["stock"],
           baseline_is="stock ModelAdmin: the queue's rows, columns, page size, filters and search", orders=orders,
           disputed=disputed, runs=RUNS)

    # ------------------------------------------------------------ RB-04 reports vs naive ORM
    def reports():
        return (selectors.dispute_rate_24h(20), selectors.repeat_offenders("seller"),
                selectors.repeat_offenders("buyer"), selectors.new_accounts_high_dispute_rate())

    reports()
    parts = {"rate": lambda: selectors.dispute_rate_24h(20), "sellers": lambda: selectors.repeat_offenders("seller"),
             "buyers": lambda: selectors.repeat_offenders("buyer"),
             "new_accounts": lambda: selectors.new_accounts_high_dispute_rate()}
    part_p95 = {name: round(percentile(timed_ms(fn, 10), 95), 3) for name, fn in parts.items()}
    timings = timed_ms(reports, RUNS)
    now = timezone.now()
    _naive_reports(now)
    naive = timed_ms(lambda: _naive_reports(now), NAIVE_RUNS)
    figure("rb04_reports_p95_ms", percentile(timings, 95), "ms", baseline=statistics.median(naive), limit=200.0,
           p50=round(statistics.median(timings), 3), per_report_p95_ms=part_p95,
           naive_runs_ms=[round(r, 1) for r in naive], orders=orders, runs=RUNS)
