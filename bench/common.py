"""Shared benchmark plumbing: a dedicated database (never the development one) and figure output."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
# The read-only benchmarks at 1,000,000 orders share one seeded database (seeded once, reused).
MILLION_DB = "million"


def bench_env(suffix: str = "bench") -> dict[str, str]:
    """Environment pointing Django at <database>_<suffix>, created and migrated if needed."""
    import psycopg

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    url = os.environ.get("DATABASE_URL") or _dev_url()
    parts = urlsplit(url)
    name = parts.path.lstrip("/") + f"_{suffix}"
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": urlunsplit(parts._replace(path=f"/{name}")), "LOG_LEVEL": "WARNING"}
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    return env


def _dev_url() -> str:
    env_file = ROOT / ".data" / "services.env"
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "DATABASE_URL":
            return value
    raise SystemExit("DATABASE_URL is not set: run through `make bench`.")


def percentile(values: list[float], pct: float) -> float:
    """The nearest-rank percentile (nan for no values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))] if ordered else float("nan")


def timed_ms(fn, runs: int) -> list[float]:
    """Milliseconds of `runs` calls of fn."""
    out = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def figure(name: str, value: float, unit: str, *, baseline: float | None = None, higher_is_better: bool = False,
           limit: float | None = None, **extra) -> dict:
    out = {"name": name, "value": round(value, 3), "unit": unit}
    if baseline is not None:
        out["baseline"] = round(baseline, 3)
        out["ratio"] = (round((value / baseline) if higher_is_better else (baseline / value), 2)
                        if value and baseline else None)
    if limit is not None:
        out["limit"] = round(limit, 3)
        out["of_limit"] = (round((value / limit) if higher_is_better else (limit / value), 3)
                           if value and limit else None)
    out.update(extra)
    print(json.dumps(out), flush=True)
    return out


MILLION = 1_000_000


def million_orders() -> dict[str, str]:
    """Django set up on the shared benchmark database, seeded with 1,000,000 orders once and reused."""
    env = bench_env(MILLION_DB)
    os.environ.update(env)
    import django

    django.setup()
    from chain.models import Order

    if Order.objects.count() < MILLION:
        subprocess.run([sys.executable, "manage.py", "seed_demo", "--orders", str(MILLION), "--reset"],
                       cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return env


STOCK_PREFIX = "/bench-stock-admin/"


class _URLConf:
    urlpatterns: list


def stock_admin_urlconf(model, admin_class):
    """The project's URLs plus `admin_class` (a stock ModelAdmin) for `model` on a throw-away AdminSite under
    STOCK_PREFIX: the baseline the benchmarks compare the back office's admin with."""
    from django.conf import settings
    from django.contrib import admin
    from django.urls import include, path

    site = admin.AdminSite(name="bench_stock")
    site.register(model, admin_class)
    urlconf = _URLConf()  # an object with urlpatterns serves as a URLconf (hashable, unlike SimpleNamespace)
    urlconf.urlpatterns = [path(STOCK_PREFIX.strip("/") + "/", site.urls), path("", include(settings.ROOT_URLCONF))]
    return urlconf


def staff_login(client, user) -> None:
    """A session that has passed the second factor (and a fresh step-up), as after a real password + code login."""
    from backoffice.testing import verify_second_factor

    client.force_login(user)
    verify_second_factor(client, user)
