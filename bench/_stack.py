"""The back office as `make run` starts it, for the alarm benchmarks: a BSC-like anvil (0.75 s blocks, 5
confirmations) behind a proxy that can be switched off, the contracts in Safe custody with the guardian module, the
real Celery workers and beat on their own database and Redis, and the automatic pause on."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .common import ROOT, bench_env

BLOCK_TIME = "0.75"
CONFIRMATIONS = 5
POLL_SECONDS = "1"  # make run's poll period for a 0.75 s chain (backoffice/supervisor.py)


class SwitchableProxy:
    """Forwards JSON-RPC to anvil; `down` makes every request fail as an unreachable provider would (connection
    reset), for an outage of the RPC without touching the node."""

    def __init__(self, upstream: str):
        import requests

        self.down = False
        local = threading.local()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 - the stdlib's name
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if outer.down:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                answer = local.session.post(upstream, data=raw, headers={"Content-Type": "application/json"},
                                            timeout=60).content
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A client or anvil gone mid-request (the outage, the stack stopping) is expected: no traceback for it.
        self.server.handle_error = lambda request, client_address: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def say(name: str, msg: str) -> None:
    print(f"[bench {name}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def running_stack(name: str, *, market: bool = False):
    """Yields (env, node url, proxy, deployment dict, database url). Everything it started stops afterwards."""
    import json

    from backoffice import devservices
    from backoffice.supervisor import worker_commands

    env = bench_env(name)
    redis = env.get("REDIS_URL") or devservices_env().get("REDIS_URL", "redis://127.0.0.1:6379/0")
    env["REDIS_URL"] = redis.rsplit("/", 1)[0] + "/11"  # the benchmark's own broker database
    anvil, node = devservices.start_anvil("bsc", block_time=BLOCK_TIME)
    proxy = SwitchableProxy(node)
    procs: list[subprocess.Popen] = []
    tmp = Path(env.get("TMPDIR", "/tmp")) / f"bench-{name}-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    deployment = tmp / "deployment.json"
    env.update({
        "CHAINS": "bsc", "CHAIN_DEPLOYMENT_FILE": str(deployment), "BSC_AUTO_PAUSE": "on",
        "BSC_POLL_SECONDS": POLL_SECONDS, "GUARDIAN_KEY": devservices.anvil_key(devservices.GUARDIAN_INDEX),
        "RELAYER_KEY": devservices.anvil_key(devservices.RELAYER_INDEX),
        "KEEPER_KEY": devservices.anvil_key(devservices.KEEPER_INDEX), "LOG_LEVEL": "WARNING",
    })
    py = sys.executable

    def manage(*args: str) -> None:
        subprocess.run([py, "manage.py", *args], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)

    try:
        # Deployed straight to the node (the proxy is for the back office's reads), then the back office reads it
        # through the proxy (BSC_RPC_URL), as a remote provider.
        # No demo sanctioned traders: their hits are true pages, and this market is meant to be a quiet one.
        manage("deploy_local_contracts", "--reset-mirror", "--no-demo-sanctions", f"--chain=bsc={node}",
               "--custody=bsc=safe",
               f"--confirmations=bsc={CONFIRMATIONS}", f"--timeouts={','.join(map(str, devservices.LOCAL_TIMEOUTS))}")
        data = json.loads(deployment.read_text())["bsc"]
        env.update({"BSC_RPC_URL": proxy.url, "BSC_CHAIN_ID": str(data["chain_id"]), "BSC_ESCROW_CONTRACT":
                    data["escrow"], "BSC_ARBITRATOR_POOL": data["arbitrator_pool"],
                    "BSC_GUARDIAN_MODULE": data["custody"]["guardian_module"], "BSC_START_BLOCK":
                    str(data["deploy_block"]), "BSC_CONFIRMATIONS": str(CONFIRMATIONS)})
        manage("forget_local_actions")
        manage("register_schedules")
        _clear_broker(env["REDIS_URL"])
        commands = {**worker_commands(env),
                    "beat": [py, "-m", "celery", "-A", "backoffice", "beat", "--loglevel", "WARNING"]}
        if market:
            commands["market"] = [py, "manage.py", "simulate_market", "--chain=bsc"]
        for cmd in commands.values():
            procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        say(name, f"stack up: anvil {node} ({BLOCK_TIME} s blocks, {CONFIRMATIONS} confirmations) behind {proxy.url}, "
                  f"{len(commands)} processes")
        yield env, node, proxy, data, env["DATABASE_URL"]
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        proxy.close()
        devservices.stop_process(anvil)


def devservices_env() -> dict[str, str]:
    env_file = ROOT / ".data" / "services.env"
    if not env_file.exists():
        return {}
    return dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)


def _clear_broker(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()


def query(database_url: str, sql: str, params: list | None = None) -> list[tuple]:
    import psycopg

    with psycopg.connect(database_url.replace("postgres://", "postgresql://", 1), autocommit=True) as conn:
        return conn.execute(sql, params or []).fetchall()


def wait_for(predicate, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return None
