"""seed_demo: fill the database with realistic, consistent demo data (bulk COPY) for scale tests."""
from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError

from chain import seeding


class Command(BaseCommand):
    help = "Fill the mirror tables with realistic demo data: --orders N (1,000,000 takes well under 2 minutes)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=20_000, help="Number of orders (default 20,000).")
        parser.add_argument("--seed", type=int, default=7, help="Random seed, for repeatable data.")
        parser.add_argument("--reset", action="store_true", help="Empty the mirror tables first.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when orders already exist.")

    def handle(self, *args, orders: int, seed: int, reset: bool, if_empty: bool, **options):
        if orders < 1:
            raise CommandError("--orders must be a positive number of orders, e.g. --orders 100000.")
        if not seeding.is_empty():
            if if_empty:
                self.stdout.write("Orders already exist: nothing seeded.")
                return
            if not reset:
                raise CommandError("The orders table is not empty: add --reset to replace the data, "
                                   "or --if-empty to skip.")
            seeding.reset()
        started = time.monotonic()
        result = seeding.seed_demo(orders=orders, seed=seed)
        self.stdout.write(self.style.SUCCESS(
            f"Seeded {result.orders:,} orders, {result.users:,} users, {result.arbitrators} arbitrators, "
            f"{result.blacklisted} blacklisted wallets in {time.monotonic() - started:.1f} s."))
