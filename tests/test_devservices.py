"""`devservices start` brings up a real PostgreSQL and Redis when no URL is configured, `stop` stops them."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

REPO = Path(__file__).resolve().parent.parent


def _devservices(verb: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess:
    child_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    child_env.update(BACKOFFICE_DATA_DIR=str(data_dir), **env)
    return subprocess.run([sys.executable, "-m", "backoffice.devservices", verb], cwd=REPO, env=child_env,
                          capture_output=True, text=True, timeout=120)


def _exports(stdout: str) -> dict[str, str]:
    pairs = [line.removeprefix("export ").split("=", 1) for line in stdout.splitlines() if line.startswith("export ")]
    return dict(pairs)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def data_dir(tmp_path):
    yield tmp_path
    _devservices("stop", tmp_path)  # never leave servers behind, whatever the test did


def test_devservices_start_runs_real_postgres_and_redis_then_stop_closes_them(data_dir):
    started = _devservices("start", data_dir)
    assert started.returncode == 0, started.stderr
    env = _exports(started.stdout)
    assert set(env) == {"DATABASE_URL", "REDIS_URL"}

    with psycopg.connect(env["DATABASE_URL"].replace("postgres://", "postgresql://", 1)) as conn:
        assert conn.execute("SELECT current_database(), 6 * 7").fetchone() == ("p2p_escrow", 42)
        assert conn.info.server_version >= 160000
    r = redis.Redis.from_url(env["REDIS_URL"])
    assert r.set("devservices-test", "ok") and r.get("devservices-test") == b"ok"
    r.close()
    assert (data_dir / "pg" / "PG_VERSION").exists()
    assert (data_dir / "services.env").read_text().count("_URL=") == 2

    # A second start reuses the running servers.
    again = _devservices("start", data_dir)
    assert _exports(again.stdout) == env

    ports = [urlsplit(env[name]).port for name in ("DATABASE_URL", "REDIS_URL")]
    stopped = _devservices("stop", data_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert [_port_open(port) for port in ports] == [False, False]
    assert not (data_dir / "services.env").exists()


def test_devservices_start_with_urls_set_starts_nothing(tmp_path):
    result = _devservices("start", tmp_path, DATABASE_URL="postgres://db.example/x", REDIS_URL="redis://cache/0")
    assert result.returncode == 0, result.stderr
    assert _exports(result.stdout) == {}
    assert "nothing embedded to start" in result.stdout
    assert not (tmp_path / "pg").exists() and not (tmp_path / "redis").exists()


def test_anvil_key_derives_anvils_default_accounts():
    from eth_account import Account

    from backoffice.devservices import ANVIL_OWNER_KEY, anvil_key

    assert anvil_key(0) == ANVIL_OWNER_KEY
    assert Account.from_key(anvil_key(1)).address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
