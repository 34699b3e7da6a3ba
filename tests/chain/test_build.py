"""`make contracts` is reproducible: rebuilding with the pinned solc (and copying the pinned Safe release) gives the
committed artifacts' bytes."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "chain" / "artifacts"


def test_contract_build_reproduces_the_committed_artifacts(tmp_path):
    result = subprocess.run(["node", "chain/contracts/build.js"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "ARTIFACTS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    committed = sorted(p.name for p in ARTIFACTS.glob("*.json"))
    assert committed == ["ArbitratorPool.json", "P2PEscrow.json", "PauseGuardianModule.json", "Safe.json",
                         "SafeProxyFactory.json", "SanctionsOracle.json", "TestToken.json"]
    assert sorted(p.name for p in tmp_path.glob("*.json")) == committed
    for name in committed:
        assert (tmp_path / name).read_bytes() == (ARTIFACTS / name).read_bytes(), name


def test_contract_build_copies_the_safe_release_unchanged():
    package = ROOT / "node_modules" / "@safe-global" / "safe-contracts"
    assert json.loads((package / "package.json").read_text())["version"] == "1.4.1"
    built = package / "build" / "artifacts" / "contracts"
    for name, file in (("Safe", "Safe.sol/Safe.json"),
                       ("SafeProxyFactory", "proxies/SafeProxyFactory.sol/SafeProxyFactory.json")):
        ours, theirs = json.loads((ARTIFACTS / f"{name}.json").read_text()), json.loads((built / file).read_text())
        assert ours["source"] == "@safe-global/safe-contracts 1.4.1 (npm build artifact)"
        assert {k: ours[k] for k in ("contractName", "abi", "bytecode", "deployedBytecode")} == \
            {k: theirs[k] for k in ("contractName", "abi", "bytecode", "deployedBytecode")}
