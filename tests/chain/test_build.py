"""`make contracts` is reproducible: rebuilding with the pinned solc gives the committed artifacts' bytes."""
from __future__ import annotations

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
    assert committed == ["ArbitratorPool.json", "P2PEscrow.json", "TestToken.json"]
    for name in committed:
        assert (tmp_path / name).read_bytes() == (ARTIFACTS / name).read_bytes(), name
