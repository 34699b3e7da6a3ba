"""Production settings refuse unsafe configuration; development needs none."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOOD_KEY = "k" * 50


def load_settings(expression: str = "settings.DEBUG", **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL", "DJANGO_ENV",
                                                                "ALLOWED_HOSTS", "DATABASE_REPLICA_URL"}}
    return subprocess.run(
        [sys.executable, "-c",
         f"import django, json; django.setup(); from django.conf import settings; print({expression})"],
        cwd=ROOT, env={**clean, "DJANGO_SETTINGS_MODULE": "backoffice.settings", **env},
        capture_output=True, text=True, timeout=60,
    )


def production(**overrides: str) -> subprocess.CompletedProcess:
    env = {"DJANGO_ENV": "production", "SECRET_KEY": GOOD_KEY, "DATABASE_URL": "postgres://u:p@db:5432/p2p_escrow",
           "ALLOWED_HOSTS": "ops.example.com"}
    for prefix in ("BSC", "ETH"):  # production names every chain's provider and contracts
        env.update({f"{prefix}_RPC_URL": "https://rpc.example.com", f"{prefix}_ESCROW_CONTRACT": "0x" + "11" * 20,
                    f"{prefix}_ARBITRATOR_POOL": "0x" + "22" * 20})
    env.update(overrides)
    return load_settings(**{k: v for k, v in env.items() if v is not None})


def test_production_settings_start_when_configured():
    result = production()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_production_settings_refuse_a_missing_secret_key():
    result = production(SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY is missing" in result.stderr


def test_production_settings_refuse_the_development_secret_key():
    result = production(SECRET_KEY="dev-only-insecure-secret-key-never-use-in-production")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_production_settings_refuse_debug():
    result = production(DEBUG="true")
    assert result.returncode != 0
    assert "DEBUG is on" in result.stderr


def test_production_settings_refuse_a_missing_database_url():
    result = production(DATABASE_URL="")
    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr


def test_development_settings_need_no_configuration():
    result = load_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_replica_settings_add_a_replica_alias_with_short_timeouts():
    result = load_settings("sorted(settings.DATABASES), settings.DATABASES['replica']['HOST'], "
                           "settings.DATABASES['replica']['TEST']['MIRROR'], settings.DATABASE_REPLICA_MAX_LAG_SECONDS",
                           DATABASE_REPLICA_URL="postgres://ro:pw@replica.internal:5432/p2p_escrow?sslmode=require")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['default', 'replica'] replica.internal default 30.0"
    assert replica_options("postgres://ro:pw@replica.internal:5432/p2p_escrow?sslmode=require") == {
        "sslmode": "require", "connect_timeout": 2, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
        "keepalives_count": 3, "tcp_user_timeout": 10000, "options": "-c statement_timeout=30s"}


def test_replica_settings_keep_the_timeouts_the_url_sets():
    url = ("postgres://ro:pw@replica.internal/p2p_escrow?connect_timeout=5&keepalives_idle=30&tcp_user_timeout=0"
           "&options=-c%20statement_timeout%3D5min%20-c%20search_path%3Dpublic")
    options = replica_options(url)
    assert options["connect_timeout"] == 5 and options["keepalives_idle"] == "30" and options["tcp_user_timeout"] == "0"
    assert options["options"] == "-c statement_timeout=5min -c search_path=public"
    assert options["keepalives"] == 1  # what the URL leaves out keeps its default
    other = replica_options("postgres://ro@replica.internal/p2p_escrow?options=-c%20search_path%3Dpublic")
    assert other["options"] == "-c search_path=public -c statement_timeout=30s"


def replica_options(url: str) -> dict:
    result = load_settings("json.dumps(settings.DATABASES['replica']['OPTIONS'], sort_keys=True)",
                           DATABASE_REPLICA_URL=url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_replica_settings_are_absent_without_a_replica_url():
    result = load_settings("sorted(settings.DATABASES)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['default']"


def test_replica_settings_refuse_a_bad_url_naming_the_setting():
    result = load_settings(DATABASE_REPLICA_URL="mysql://ro@replica/p2p_escrow")
    assert result.returncode != 0
    assert "DATABASE_REPLICA_URL must start with postgres://" in result.stderr


def test_backup_settings_refuse_a_lock_wait_or_timeout_below_one_second():
    for name in ("BACKUP_LOCK_WAIT_SECONDS", "BACKUP_TIMEOUT_SECONDS"):
        result = load_settings(**{name: "0"})
        assert result.returncode != 0
        assert f"{name}=0" in result.stderr and "1 or more" in result.stderr


def test_backup_settings_refuse_a_retention_below_one_day():
    for value in ("0", "-3"):
        result = load_settings(BACKUP_RETENTION_DAYS=value)
        assert result.returncode != 0
        assert f"BACKUP_RETENTION_DAYS={value}" in result.stderr and "1 or more" in result.stderr
