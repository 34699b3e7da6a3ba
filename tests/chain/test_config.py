"""Chains from configuration: CHAINS names them, each reads its own prefix; a third chain needs only the environment."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from backoffice.chain_settings import chain_prefix, chains_from_env
from backoffice.devservices import running_anvil
from chain.models import EventSyncCursor, Order

from .conftest import Deployment, Market, Node

ROOT = Path(__file__).resolve().parents[2]
CHAIN_VARS = ("CHAINS", "BSC_", "ETH_", "BASE_", "DJANGO_ENV", "CHAIN_DEPLOYMENT_FILE")


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(CHAIN_VARS)}


def load_settings(**env: str) -> subprocess.CompletedProcess:
    """Settings built from the environment in a fresh interpreter, as a worker or `manage.py` builds them."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
                               "print(','.join(settings.CHAINS))"],
        cwd=ROOT, env={**clean_environ(), "DJANGO_SETTINGS_MODULE": "backoffice.settings", **env},
        capture_output=True, text=True, timeout=60)


def test_config_defaults_to_bsc_and_ethereum_with_the_runbook_prefixes():
    chains = chains_from_env({"ETH_CONFIRMATIONS": "20"}, production=False)
    assert list(chains) == ["bsc", "ethereum"]
    assert (chains["bsc"]["prefix"], chains["ethereum"]["prefix"]) == ("BSC", "ETH")
    assert (chains["bsc"]["chain_id"], chains["ethereum"]["chain_id"]) == (56, 1)
    assert chains["ethereum"]["confirmations"] == 20 and chains["bsc"]["confirmations"] == 15
    assert (chains["bsc"]["name"], chains["ethereum"]["name"]) == ("BNB Smart Chain", "Ethereum")
    assert (chains["bsc"]["label"], chains["ethereum"]["label"]) == ("BSC", "Ethereum")  # lists' short forms


def test_config_a_new_chain_reads_its_upper_cased_name_as_prefix():
    chains = chains_from_env({"CHAINS": "bsc, ethereum, base", "BASE_RPC_URL": "https://base.example",
                              "BASE_CHAIN_ID": "8453", "BASE_BLOCK_TIME": "2", "ETH_RPC_URL": "https://eth.example"},
                             production=False)
    assert list(chains) == ["bsc", "ethereum", "base"] and chain_prefix("base") == "BASE"
    base = chains["base"]
    assert (base["rpc_url"], base["chain_id"], base["block_time"], base["short"]) == ("https://base.example", 8453, 2.0,
                                                                                       "base")
    assert base["name"] == base["label"] == "Base" and base["poll_seconds"] == 3.0 and base["confirmations"] == 12
    assert chains["ethereum"]["rpc_url"] == "https://eth.example" and chains["bsc"]["rpc_url"] == ""


@pytest.mark.parametrize("value, message", [
    ("bsc,Base", "'Base' is not a chain name"),
    ("bsc,base-mainnet", "'base-mainnet' is not a chain name"),
    ("bsc,bsc", "names bsc twice"),
    (" , ", "names no chain"),
    ("ethereum,eth", "ethereum and eth would both read ETH_"),
])
def test_config_refuses_a_bad_chains_value_and_says_what_to_write(value, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        chains_from_env({"CHAINS": value}, production=False)
    result = load_settings(CHAINS=value)
    assert result.returncode != 0 and message in result.stderr and "CHAINS" in result.stderr


def test_config_refuses_a_remote_chain_without_its_chain_id():
    result = load_settings(CHAINS="bsc,ethereum,base", BASE_RPC_URL="https://base.example")
    assert result.returncode != 0
    assert "CHAINS names 'base' but BASE_CHAIN_ID is not set: set it" in result.stderr


def test_config_in_production_refuses_a_chain_without_provider_or_contracts():
    with pytest.raises(ImproperlyConfigured, match="BASE_ESCROW_CONTRACT and BASE_ARBITRATOR_POOL are not set"):
        chains_from_env({"CHAINS": "base", "BASE_RPC_URL": "https://base.example", "BASE_CHAIN_ID": "8453"},
                        production=True)
    with pytest.raises(ImproperlyConfigured, match="BSC_RPC_URL, BSC_ESCROW_CONTRACT and BSC_ARBITRATOR_POOL"):
        chains_from_env({"CHAINS": "bsc"}, production=True)


def test_config_refuses_a_number_that_is_not_one():
    with pytest.raises(ImproperlyConfigured, match="BASE_CONFIRMATIONS='twelve' is not an integer"):
        chains_from_env({"CHAINS": "base", "BASE_CONFIRMATIONS": "twelve"}, production=False)


def test_config_an_unknown_owner_mode_names_the_variable():
    with pytest.raises(ImproperlyConfigured, match="ETH_OWNER_MODE is 'multisig'"):
        chains_from_env({"ETH_OWNER_MODE": "multisig"}, production=False)


@pytest.mark.parametrize("variable, value, message", [
    ("BASE_SYNC_BATCH_BLOCKS", "0", "BASE_SYNC_BATCH_BLOCKS is 0: use 1 or more"),
    ("BASE_POLL_SECONDS", "0", "BASE_POLL_SECONDS is 0: use the seconds between two polls, more than 0"),
    ("BASE_POLL_SECONDS", "-3", "BASE_POLL_SECONDS is -3: use the seconds"),
    ("BASE_POLL_SECONDS", "0.0000001", "BASE_POLL_SECONDS is 1e-07: use the seconds"),
    ("BASE_CONFIRMATIONS", "-1", "BASE_CONFIRMATIONS is -1: use 0"),
    ("BASE_BLOCK_TIME", "0", "BASE_BLOCK_TIME is 0: use the chain's seconds per block"),
    ("BASE_BLOCK_TIME", "-2", "BASE_BLOCK_TIME is -2: use the chain's seconds per block"),
    ("BASE_START_BLOCK", "-5", "BASE_START_BLOCK is -5: use the block the contracts were deployed in"),
    ("BASE_CHAIN_ID", "0", "BASE_CHAIN_ID is 0: use the chain's id"),
    ("BASE_CHAIN_ID", "-8453", "BASE_CHAIN_ID is -8453: use the chain's id"),
    ("BASE_RPC_MAX_RPS", "-1", "BASE_RPC_MAX_RPS is -1: use a number of requests per second"),
    ("BASE_SYNC_MAX_IN_FLIGHT", "0", "BASE_SYNC_MAX_IN_FLIGHT is 0: use 1"),
    ("BASE_RPC_MAX_BLOCK_RANGE", "-1", "BASE_RPC_MAX_BLOCK_RANGE is -1: use the most blocks the provider allows"),
    ("BASE_RPC_FALLBACK_MAX_BLOCK_RANGE", "-5000",
     "BASE_RPC_FALLBACK_MAX_BLOCK_RANGE is -5000: use the most blocks the fallback provider allows"),
    ("BASE_MIN_GAS_BALANCE", "-0.1", "BASE_MIN_GAS_BALANCE is '-0.1': use an amount of the chain's native coin"),
    ("BASE_MIN_GAS_BALANCE", "lots", "BASE_MIN_GAS_BALANCE is 'lots': use an amount"),
    ("BASE_MIN_GAS_BALANCE", "NaN", "BASE_MIN_GAS_BALANCE is 'NaN': use an amount"),
    ("BASE_SAFE_KNOWN_MODULES", "0x12,vault", "BASE_SAFE_KNOWN_MODULES holds 0x12, vault: use 0x-prefixed 20-byte"),
    ("BASE_BLOCK_TIME", "nan", "BASE_BLOCK_TIME='nan' is not a number"),
    ("BASE_POLL_SECONDS", "inf", "BASE_POLL_SECONDS='inf' is not a number"),
])
def test_config_refuses_a_number_out_of_range_naming_variable_value_and_fix(variable, value, message):
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        chains_from_env({"CHAINS": "base", variable: value}, production=False)
    # Where a worker or beat meets it: the settings stop before anything runs.
    result = load_settings(CHAINS="bsc,base", **{variable: value})
    assert result.returncode != 0 and message in result.stderr


def test_config_refuses_the_runbook_chains_numbers_out_of_range_under_their_prefixes():
    with pytest.raises(ImproperlyConfigured, match="BSC_SYNC_BATCH_BLOCKS is 0"):
        chains_from_env({"BSC_SYNC_BATCH_BLOCKS": "0"}, production=False)
    with pytest.raises(ImproperlyConfigured, match="ETH_CONFIRMATIONS is -12"):
        chains_from_env({"ETH_CONFIRMATIONS": "-12"}, production=False)


def test_config_names_every_number_out_of_range_at_once():
    with pytest.raises(ImproperlyConfigured) as refused:
        chains_from_env({"BSC_POLL_SECONDS": "0", "BSC_BLOCK_TIME": "0", "BSC_CONFIRMATIONS": "-1"}, production=False)
    assert all(name in str(refused.value) for name in ("BSC_POLL_SECONDS", "BSC_BLOCK_TIME", "BSC_CONFIRMATIONS"))


def test_config_accepts_the_edges_of_each_range():
    chain = chains_from_env({"CHAINS": "base", "BASE_CONFIRMATIONS": "0", "BASE_START_BLOCK": "0",
                             "BASE_SYNC_BATCH_BLOCKS": "1", "BASE_POLL_SECONDS": "0.5", "BASE_BLOCK_TIME": "0.25",
                             "BASE_RPC_MAX_RPS": "0", "BASE_SYNC_MAX_IN_FLIGHT": "1", "BASE_MIN_GAS_BALANCE": "0",
                             "BASE_RPC_MAX_BLOCK_RANGE": "0", "BASE_CHAIN_ID": "1"}, production=False)["base"]
    assert (chain["confirmations"], chain["start_block"], chain["batch_blocks"], chain["poll_seconds"],
            chain["block_time"], chain["min_gas_balance"]) == (0, 0, 1, 0.5, 0.25, "0")
    # A chain without a provider may leave its id unknown (0) until a local deployment fills it in.
    assert chains_from_env({"CHAINS": "base"}, production=False)["base"]["chain_id"] == 0


def test_config_the_fallbacks_block_range_cap_is_the_primarys_unless_it_has_its_own():
    chains = chains_from_env({"BSC_RPC_MAX_BLOCK_RANGE": "10000", "ETH_RPC_MAX_BLOCK_RANGE": "10000",
                              "ETH_RPC_FALLBACK_MAX_BLOCK_RANGE": "5"}, production=False)
    assert (chains["bsc"]["max_block_range"], chains["bsc"]["fallback_max_block_range"]) == (10_000, 10_000)
    assert (chains["ethereum"]["max_block_range"], chains["ethereum"]["fallback_max_block_range"]) == (10_000, 5)
    unset = chains_from_env({}, production=False)["bsc"]
    assert (unset["max_block_range"], unset["fallback_max_block_range"]) == (0, 0), "none known: learnt from refusals"


# ------------------------------------------------------------------ a third chain, by environment alone

THIRD_CHAIN_SCRIPT = r"""
import io, json
import django
django.setup()
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django_celery_beat.models import PeriodicTask
from chain.sync import sync_chain
from ops.monitoring import health
from django.contrib.auth import get_user_model
from django.urls import reverse
from backoffice.testing import verify_second_factor
from django.utils import timezone
from ops.monitoring.dashboard import _contract_tiles, _health_tiles, _sync_tiles
from ops.monitoring.schedules import schedules

synced = sync_chain("base")
call_command("register_schedules", stdout=io.StringIO())
checks = health.run_checks(deadline=10)
client = Client()
metrics = client.get("/metrics", HTTP_AUTHORIZATION="Bearer third-chain").content.decode()
staff = get_user_model().objects.create_user("third", password="third-chain-password", is_staff=True,
                                             is_superuser=True)
client.force_login(staff)
verify_second_factor(client, staff)
status_page = client.get(reverse("admin:ops_contractaction_status", args=["base"]))
print(json.dumps({
    "chains": list(settings.CHAINS),
    "events": synced.events,
    "rpc_base": checks.get("rpc_base"),
    "queues": checks["celery"].get("queues"),
    "metrics": [line for line in metrics.splitlines() if 'chain="base"' in line or 'queue="sync.base"' in line],
    "schedules": {s.name: s.queue for s in schedules() if "-base-" in s.name},
    "beat": list(PeriodicTask.objects.filter(name__contains="base").values_list("name", "queue", "kwargs")),
    "tiles": [t.key for t in _health_tiles() + _sync_tiles(timezone.now()) + _contract_tiles()],
    "status_page": [status_page.status_code,
                    settings.CHAINS["base"]["escrow"].lower() in status_page.content.decode().lower()],
}))
"""  # noqa: E501 - the script is a string: wrapping its lines would change the string


def url_of_the_test_database() -> str:
    from urllib.parse import quote

    d = connection.settings_dict
    auth = quote(d["USER"], safe="") + (":" + quote(d["PASSWORD"], safe="") if d["PASSWORD"] else "")
    return f"postgres://{auth}@{quote(d['HOST'], safe='')}:{d['PORT']}/{d['NAME']}"


@pytest.mark.anvil
@pytest.mark.django_db(transaction=True)
def test_config_a_third_chain_by_environment_alone_is_synced_checked_measured_and_scheduled(tmp_path):
    from chain.local import deploy_local

    with running_anvil("base", block_time="", extra=["--gas-limit", "1000000000"]) as (_proc, url):
        data = deploy_local({"base": {"rpc_url": url, "confirmations": 0, "custody": "eoa"}},
                            path=tmp_path / "deployment.json")["base"]
        node = Node(url)
        summary = Market(node, Deployment(url, tmp_path / "deployment.json", data)).run(20)
        # Only variables: the deployment file the tests wrote is not where the settings look.
        env = {**clean_environ(), "DJANGO_SETTINGS_MODULE": "backoffice.settings",
               "DATABASE_URL": url_of_the_test_database(), "CHAIN_DEPLOYMENT_FILE": str(tmp_path / "absent.json"),
               "METRICS_TOKEN": "third-chain", "CHAINS": "bsc,ethereum,base",
               "BASE_RPC_URL": url, "BASE_CHAIN_ID": str(data["chain_id"]), "BASE_CONFIRMATIONS": "0",
               "BASE_ESCROW_CONTRACT": data["escrow"], "BASE_ARBITRATOR_POOL": data["arbitrator_pool"],
               "BASE_START_BLOCK": str(data["deploy_block"]), "BASE_BLOCK_TIME": "2", "BASE_NAME": "Base"}
        result = subprocess.run([sys.executable, "-c", THIRD_CHAIN_SCRIPT], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout.strip().splitlines()[-1])
        head = node.head()

    assert out["chains"] == ["bsc", "ethereum", "base"] and out["events"] > 0
    # The mirror: every order of the third chain, in the state its fate left it.
    orders = dict(Order.objects.filter(chain="base").values_list("onchain_id", "status"))
    assert len(orders) == summary.orders == 20
    assert orders[next(o for o, fate in summary.fates.items() if fate == "completed")] == "completed"
    assert not Order.objects.exclude(chain="base").exists()
    assert EventSyncCursor.objects.get(chain="base").last_block == head
    # Its health check, its metrics labels, its schedule entries (on its own queue) and its dashboard tile.
    assert out["rpc_base"]["status"] in ("ok", "warning") and out["rpc_base"]["latest_block"] == head
    assert out["queues"]["sync.base"] == 0
    assert any(line.startswith(f'blockchain_sync_last_block{{chain="base"}} {float(head)}') for line in out["metrics"])
    assert any(line.startswith('p2p_orders_completed_total{chain="base"}') for line in out["metrics"])
    assert any(line.startswith('celery_tasks_queued{queue="sync.base"}') for line in out["metrics"])
    assert out["schedules"] == {"poll-base-events": "sync.base", "reconcile-base-orders": "sync.base"}
    assert ("poll-base-events", "sync.base", '{"chain": "base"}') in [tuple(b) for b in out["beat"]]
    assert {"health-rpc_base", "sync-base", "contract-base"} <= set(out["tiles"])
    assert out["status_page"] == [200, True]
