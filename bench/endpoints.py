"""endpoints: /health and /metrics under 50 concurrent clients for 30 s each, at 1,000,000 orders.

The project runs in a real HTTP server (gunicorn, 2 threaded workers as in production, DEBUG off) on a
loopback port, against a dedicated database seeded with 1,000,000 orders (reused when already
there). The clients are 50 asyncio connections (HTTP/1.1 keep-alive, one request in flight each, no
think time) in this process: light enough that the server, not the client, is what is measured.
An error is an exception, a timeout or an HTTP status other than 200 (a "degraded" /health still
answers 200). Targets: health p95 <= 50 ms, metrics p95 <= 100 ms, zero errors.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from backoffice.devservices import free_port, stop_process

from .common import ROOT, figure, million_orders, percentile

CLIENTS = 50
SECONDS = 30.0
WARMUP = 3.0
REQUEST_TIMEOUT = 10.0


def _order_count(env: dict[str, str]) -> int:
    import psycopg

    url = env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT COUNT(*) FROM orders").fetchone()[0]


async def _client(port: int, path: str, headers: str, until: float, record_from: float,
                  latencies: list[float], errors: dict[str, int]) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n").encode()
    reader = writer = None
    while time.monotonic() < until:
        started = time.perf_counter()
        recording = time.monotonic() >= record_from
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", 0))), REQUEST_TIMEOUT)
            if fields.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
        except Exception as exc:  # noqa: BLE001 - every failure is an error of the run
            if recording:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if writer is not None:
                writer.close()
            reader = writer = None
            continue
        elapsed = (time.perf_counter() - started) * 1000
        if recording:
            if status != 200:
                errors[f"HTTP {status}"] = errors.get(f"HTTP {status}", 0) + 1
            latencies.append(elapsed)
    if writer is not None:
        writer.close()


async def _load(port: int, path: str, headers: str) -> tuple[list[float], dict[str, int], float]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    start = time.monotonic()
    record_from, until = start + WARMUP, start + WARMUP + SECONDS
    await asyncio.gather(*(_client(port, path, headers, until, record_from, latencies, errors)
                           for _ in range(CLIENTS)))
    return latencies, errors, SECONDS


def _wait_ready(port: int, proc: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gunicorn exited with {proc.returncode}:\n{open(log_path).read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status in (200, 503):
                    return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("gunicorn did not answer /health within 60 s")


def main() -> None:
    env = million_orders()  # the server runs in its own process on the same database
    orders = _order_count(env)
    token = secrets.token_urlsafe(32)
    port = free_port()
    server_env = {**env, "METRICS_TOKEN": token, "DEBUG": "false", "DJANGO_SETTINGS_MODULE": "backoffice.settings",
                  "ALLOWED_HOSTS": "127.0.0.1", "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    log = tempfile.NamedTemporaryFile(prefix="bench-endpoints-", suffix=".log", delete=False)
    # As in production (README): gunicorn, threaded workers, one per core.
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "backoffice.wsgi", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--worker-class", "gthread", "--threads", "16",
                             "--log-level", "warning"], cwd=ROOT, env=server_env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_ready(port, proc, log.name)
        results = {}
        for name, path, headers in (("health", "/health", ""),
                                    ("metrics", "/metrics", f"Authorization: Bearer {token}\r\n")):
            latencies, errors, seconds = asyncio.run(_load(port, path, headers))
            results[name] = (latencies, errors, seconds)
    finally:
        stop_process(proc)
        log.close()
    for name, limit in (("health", 50.0), ("metrics", 100.0)):
        latencies, errors, seconds = results[name]
        figure(f"{name}_p95_ms", percentile(latencies, 95), "ms", limit=limit, errors=sum(errors.values()),
               error_kinds=errors, requests=len(latencies), rps=round(len(latencies) / seconds, 1),
               p50_ms=round(percentile(latencies, 50), 2), p99_ms=round(percentile(latencies, 99), 2),
               max_ms=round(max(latencies), 2) if latencies else None,
               mean_ms=round(statistics.fmean(latencies), 2) if latencies else None,
               clients=CLIENTS, seconds=SECONDS, orders=orders)
    os.unlink(log.name)
