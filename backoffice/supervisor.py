"""`make run`: embedded services, migrations, demo data and a demo login, then web + worker + beat.

Everything runs in the foreground; Ctrl-C (or any process dying) stops all of them and the
embedded services this run started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from . import devservices
from .chain_settings import chain_prefix

PYTHON = sys.executable


def _manage(*args: str, env: dict[str, str]) -> None:
    subprocess.run([PYTHON, "manage.py", *args], check=True, env=env, cwd=devservices.BASE_DIR)


def up(argv: list[str]) -> int:
    env_add, started = devservices.start()
    env = {**os.environ, **env_add, "PYTHONUNBUFFERED": "1"}
    procs: list[tuple[str, subprocess.Popen]] = []
    anvils: list[subprocess.Popen] = []
    try:
        _manage("migrate", "--noinput", "-v", "0", env=env)
        local = _start_local_chains(anvils, env)
        if not local and settings_deployment_file().exists():
            settings_deployment_file().unlink()  # every chain is configured: no stale local addresses
        if local:
            # Local keys are anvil's published development accounts. The relayer (pays gas for the Safe's
            # execTransaction) and the keeper (timeouts) have no role in any contract; the owner key is
            # only handed over for a chain someone set to eoa custody.
            env.setdefault("RELAYER_KEY", devservices.anvil_key(devservices.RELAYER_INDEX))
            env.setdefault("KEEPER_KEY", devservices.anvil_key(devservices.KEEPER_INDEX))
            # RB-05 by itself on the local chains: the server's guardian key pauses when a certain trigger holds.
            env.setdefault("GUARDIAN_KEY", devservices.anvil_key(devservices.GUARDIAN_INDEX))
            for chain in local:
                env.setdefault(f"{chain_prefix(chain)}_AUTO_PAUSE", "on")
                # A local node is cheap to ask: polled about once a block (at most once a second), so a drain is
                # seen, confirmed at a later block and paused within a dozen blocks.
                block_time = float(devservices.anvil_spec(chain).get("block_time") or 12)
                env.setdefault(f"{chain_prefix(chain)}_POLL_SECONDS", str(max(1.0, block_time)))
            if any(env.get(f"{chain_prefix(c)}_OWNER_MODE", "safe") == "eoa" for c in local):
                env.setdefault("OWNER_KEY", devservices.ANVIL_OWNER_KEY)
            # A fresh local chain each run: deploy, and start the mirror from nothing.
            _manage("deploy_local_contracts", "--reset-mirror",
                    *[f"--chain={c}={url}" for c, url in local.items()],
                    *[f"--custody={c}={env.get(chain_prefix(c) + '_OWNER_MODE', 'safe')}" for c in local],
                    *[f"--confirmations={c}={devservices.anvil_spec(c)['confirmations']}" for c in local],
                    f"--timeouts={','.join(map(str, devservices.LOCAL_TIMEOUTS))}", env=env)
            if set(local) == set(devservices.local_chains(env)):
                # Every chain is new: the old chains' contract actions and nonces would only leave gaps.
                _manage("forget_local_actions", env=env)
        for chain, url in local.items():
            if devservices.anvil_spec(chain).get("interval_after_deploy"):
                devservices.set_interval_mining(url, devservices.anvil_spec(chain)["interval_after_deploy"])
        _manage("register_schedules", env=env)
        _manage("ensure_demo_staff", env=env)
        port = int(os.environ.get("PORT", "8000"))
        if devservices._port_open(port):
            port = devservices.free_port()
        commands = {
            "web": [PYTHON, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            **worker_commands(env),
            "beat": [PYTHON, "-m", "celery", "-A", "backoffice", "beat", "--loglevel", "INFO"],
        }
        if local:
            commands["market"] = [PYTHON, "manage.py", "simulate_market", *[f"--chain={c}" for c in local]]
        for name, cmd in commands.items():
            procs.append((name, subprocess.Popen(cmd, env=env, cwd=devservices.BASE_DIR, start_new_session=True)))
        print(
            "\n  Back office:  http://127.0.0.1:%d/admin/\n"
            "  Login:        ops / ops-demo-password, then the one-time code from `make otp`\n"
            "                (ops-bob and ops-carol: the same password and code; with ops they are the\n"
            "                Safe's three owners, 2 of 3 sign each owner action)\n"
            "                (development only; a new staff user enrols an authenticator at first login)\n"
            "  Stop:         Ctrl-C\n" % port,
            file=sys.stderr, flush=True,
        )
        return _wait(procs)
    except KeyboardInterrupt:
        return 0
    finally:
        for _name, proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _name, proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for anvil in anvils:
            if anvil.poll() is None:
                os.killpg(anvil.pid, signal.SIGTERM)
                anvil.wait(timeout=10)
        devservices.stop(started)


def worker_commands(env: dict[str, str]) -> dict[str, list[str]]:
    """The workers of make run, laid out as production runs them (README, "Running in production"): one per
    chain on its sync queue, so a chain catching up never delays another, one for the contract actions, and one
    for everything else."""
    from .chain_settings import DEFAULT_CHAINS, chain_names
    from .queues import ACTIONS, ALERTS, CHECKS, DEFAULT, sync_queue

    def worker(name: str, queues: list[str], concurrency: int) -> list[str]:
        return [PYTHON, "-m", "celery", "-A", "backoffice", "worker", "--loglevel", "INFO", "-Q", ",".join(queues),
                "-n", f"{name}@%h", "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"]

    # One sync per chain runs at a time anyway (the sync's advisory lock): one process per chain is enough.
    commands = {f"worker-{chain}": worker(f"sync-{chain}", [sync_queue(chain)], 1)
                for chain in chain_names(env.get("CHAINS", DEFAULT_CHAINS))}
    # Contract actions, the keeper and the checks that may pause a chain on their own process: an automatic
    # pause never waits behind a backup, a report or a slow check.
    commands["worker-actions"] = worker("actions", [ACTIONS], 1)
    commands["worker"] = worker("main", [CHECKS, ALERTS, DEFAULT], 2)
    return commands


def settings_deployment_file():
    from pathlib import Path

    return Path(os.environ.get("CHAIN_DEPLOYMENT_FILE", devservices.CHAIN_DIR / "deployment.json"))


def _start_local_chains(anvils: list[subprocess.Popen], env: dict[str, str]) -> dict[str, str]:
    """One anvil per chain CHAINS names whose RPC URL is not configured; returns {chain: url}."""
    started = {}
    for chain, spec in devservices.local_chains(env).items():
        if env.get(spec["env"]):
            continue
        proc, url = devservices.start_anvil(chain)
        anvils.append(proc)
        started[chain] = url
    return started


def _wait(procs: list[tuple[str, subprocess.Popen]]) -> int:
    stop = {"now": False}

    def _handler(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, _handler)
    while not stop["now"]:
        for name, proc in procs:
            code = proc.poll()
            if code is not None:
                print(f"[run] {name} exited with {code}; stopping everything", file=sys.stderr, flush=True)
                return code or 1
        time.sleep(0.5)
    return 0
