"""timeouts: finding the orders due for auto-expiry and auto-release among 1,000,000 orders (runbook §5).

`timeout_scan_ms` is the p95 of `ops.actions.timeouts.due_timeouts` (both kinds, both chains, limit 200) against
a naive ORM loop over every order in the same run. The seeded database is reused when it already
holds the orders (seeding takes about a minute).
"""
from __future__ import annotations

import statistics
import time

from .common import figure, million_orders, percentile

RUNS = 30
KINDS = ("auto_expire", "auto_release")


def main() -> None:
    million_orders()
    from django.utils import timezone

    from chain.models import Order
    from chain.seeding import SEED_CHAINS
    from ops.actions.timeouts import due_timeouts

    chains = list(SEED_CHAINS)  # the seeded orders' chains, whatever CHAINS configures

    orders = Order.objects.count()
    now = timezone.now()

    due_timeouts("auto_expire", now=now, chains=chains)  # warm the cache and the plan, as beat's 60 s loop does
    timings: dict[str, list[float]] = {kind: [] for kind in KINDS}
    found: dict[str, int] = {}
    for _ in range(RUNS):
        for kind in KINDS:
            started = time.perf_counter()
            rows = due_timeouts(kind, now=now, chains=chains, limit=200)
            timings[kind].append((time.perf_counter() - started) * 1000)
            found[kind] = len(rows)

    naive_runs = []
    naive_found = 0
    for _ in range(2):
        started = time.perf_counter()
        due = [o for o in Order.objects.all().iterator(chunk_size=10_000)
               if (o.status == "funded" and o.seller_deadline and o.seller_deadline < now)
               or (o.status == "delivered" and o.buyer_deadline and o.buyer_deadline < now)]
        naive_runs.append((time.perf_counter() - started) * 1000)
        naive_found = len(due)
    baseline = min(naive_runs)

    both = timings["auto_expire"] + timings["auto_release"]
    for kind in KINDS:
        figure(f"timeout_scan_ms_{kind}", percentile(timings[kind], 95), "ms",
               p50=round(percentile(timings[kind], 50), 3), found=found[kind], runs=RUNS)
    figure("timeout_scan_ms", percentile(both, 95), "ms", baseline=baseline, limit=50.0,
           p50=round(statistics.median(both), 3), orders=orders, due_total=naive_found,
           found_per_kind=found, naive_runs_ms=[round(r, 1) for r in naive_runs])
