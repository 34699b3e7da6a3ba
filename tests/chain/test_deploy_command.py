"""`manage.py deploy_local_contracts`, as make run calls it: after new local nodes have started and before the
deployment file names them."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from backoffice.devservices import GUARDIAN_INDEX, anvil_key
from tests.chain.conftest import dead_url

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_deployment_runs_no_check_of_the_chains_it_is_about_to_replace(deployment, tmp_path):
    # The last run's deployment file names a node that is gone (make run's anvils are new each time), and the
    # automatic pause's key is set: the guardian check reads that chain's Safe, and warns that it cannot.
    stale = deployment.write_variant(tmp_path / "stale.json", rpc_url=dead_url(), rpc_fallback=dead_url())
    env = {**os.environ, "CHAIN_DEPLOYMENT_FILE": str(stale), "GUARDIAN_KEY": anvil_key(GUARDIAN_INDEX),
           "BSC_OWNER_MODE": "safe"}
    checked = _manage("check", env=env)
    assert "chain.W003" in checked.stdout + checked.stderr, checked.stdout + checked.stderr

    # The deployment itself does not run that check: it is what writes the file the check would read. (A chain it
    # does not know stops it before any deployment, after the point where the checks would have run.)
    deployed = _manage("deploy_local_contracts", "--chain=nowhere=http://127.0.0.1:9", env=env)
    assert deployed.returncode != 0 and "--chain 'nowhere=http://127.0.0.1:9'" in deployed.stderr, deployed.stderr
    assert "chain.W003" not in deployed.stdout + deployed.stderr
    assert "System check" not in deployed.stdout + deployed.stderr
