"""seed: `seed_demo --orders 1000000` wall time and the command's peak memory."""
from __future__ import annotations

import subprocess
import sys
import time

import psutil

from .common import ROOT, bench_env, figure

ORDERS = 1_000_000


def main() -> None:
    env = bench_env("seed")
    started = time.monotonic()
    proc = psutil.Popen([sys.executable, "manage.py", "seed_demo", "--orders", str(ORDERS), "--reset"],
                        cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"seed_demo failed with exit code {proc.returncode}")
    figure("seed_seconds", seconds, "s", limit=120.0, orders=ORDERS)
    figure("seed_rows_per_s", ORDERS / seconds, "orders/s", higher_is_better=True)
    figure("seed_peak_memory_mb", peak / 2**20, "MB")
