"""The alert rules and the Grafana dashboard are valid, and cover the runbook's table."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROM = Path(__file__).resolve().parents[2] / "ops" / "prometheus"
DASHBOARD = Path(__file__).resolve().parents[2] / "ops" / "grafana" / "dashboard.json"


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: `make install` installs Debian's prometheus package")
    return subprocess.run([exe, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_alert_rules_pass_promtool_check():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 23 rules found" in result.stdout


def test_alert_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_cover_the_runbook_alert_table():
    names = set(re.findall(r"alert: (\w+)", (PROM / "alerts.yml").read_text()))
    runbook_rows = {"APIDown", "APISlow", "APIHighErrorRate", "DBConnectionsExhausted", "DBConnectionsHigh",
                    "RedisOOM", "RedisHighMemory", "BlockchainSyncLag", "BlockchainSyncStuck", "CeleryQueueBuildup",
                    "CeleryNoWorkers", "RPCPrimaryDown", "RPCBothDown", "DiskUsage", "DiskCritical",
                    "HighDisputeRate", "LargeOrder", "ContractPaused"}
    assert runbook_rows <= names


def test_grafana_dashboard_has_the_runbook_seven_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    assert len(titles) == 7
    for word in ("latency", "Error rate", "Order volume", "sync lag", "connection", "Redis", "Celery"):
        assert any(word.lower() in t.lower() for t in titles), word
    assert all(t["expr"] for p in dashboard["panels"] for t in p["targets"])
