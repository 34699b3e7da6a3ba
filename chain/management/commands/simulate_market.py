"""simulate_market: drive realistic escrow activity on the local chains (make run); the logic is chain.market."""
from __future__ import annotations

import json
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from web3 import Web3

from chain.market import MarketDriver


class Command(BaseCommand):
    help = ("Drive orders, deliveries, disputes and arbitrators through the local escrow contracts, one thread per "
            "chain.")

    def add_arguments(self, parser):
        parser.add_argument("--chain", action="append", default=[],
                            help="Chain to drive (repeatable; default: all deployed).")
        parser.add_argument("--steps", type=int, default=0, help="Steps per chain, 0 = until interrupted.")
        parser.add_argument("--interval", type=float, default=0.3, help="Seconds between steps.")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, chain, steps, interval, seed, **options):
        if settings.PRODUCTION:
            raise CommandError("simulate_market drives local development chains only.")
        path = settings.CHAIN_DEPLOYMENT_FILE
        if not path.exists():
            raise CommandError(f"No deployment file at {path}: run `manage.py deploy_local_contracts` first.")
        deployment = json.loads(path.read_text())
        chains = chain or list(deployment)
        missing = [c for c in chains if c not in deployment]
        if missing:
            raise CommandError(f"--chain {', '.join(missing)}: not in {path} (deployed: {', '.join(deployment)}).")

        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        threads = [threading.Thread(target=self.drive, name=f"market-{name}", daemon=True,
                                    args=(name, deployment[name], steps, interval, seed + i, stop))
                   for i, name in enumerate(chains)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.5)
        self.stdout.write("simulate_market stopped")

    def drive(self, name: str, spec: dict, steps: int, interval: float, seed: int, stop: threading.Event) -> None:
        driver = MarketDriver(Web3(Web3.HTTPProvider(spec["rpc_url"])), spec, seed=seed)
        driver.setup()
        done = 0
        while not stop.is_set() and (not steps or done < steps):
            driver.step()
            done += 1
            if done % 50 == 0:
                s = driver.stats
                self.stdout.write(f"{name}: {done} steps, {len(driver.orders)} open orders, created {s['create']}, "
                                  f"disputes {s['dispute']}, reverted {s['reverted']}")
            stop.wait(interval)
