"""DATABASE_URL in the forms libpq users write: socket directories, ?host= and libpq's query parameters."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from backoffice.database_url import database_settings

ROOT = Path(__file__).resolve().parent.parent


def test_database_url_reads_a_tcp_url_as_before():
    config = database_settings("postgres://ops:p%40ss%2Fword@db.internal:6432/p2p_escrow")
    assert config == {"ENGINE": "django.db.backends.postgresql", "NAME": "p2p_escrow", "USER": "ops",
                      "PASSWORD": "p@ss/word", "HOST": "db.internal", "PORT": "6432", "OPTIONS": {}}


def test_database_url_reads_a_percent_encoded_socket_directory_as_host():
    config = database_settings("postgres://ops@%2Fvar%2Frun%2FPostgreSQL/p2p_escrow")
    assert config["HOST"] == "/var/run/PostgreSQL"  # decoded, and its case kept
    assert (config["USER"], config["NAME"], config["PORT"]) == ("ops", "p2p_escrow", "")


def test_database_url_reads_the_host_and_port_query_parameters():
    config = database_settings("postgresql://ops@/p2p_escrow?host=/var/run/postgresql&port=5433")
    assert (config["HOST"], config["PORT"]) == ("/var/run/postgresql", "5433")
    assert config["OPTIONS"] == {}


def test_database_url_puts_sslmode_and_certificates_in_options():
    config = database_settings("postgres://ops@db/p2p_escrow?sslmode=verify-full&sslrootcert=/etc/ssl/ca.pem"
                               "&sslcert=/etc/ssl/client.crt&sslkey=/etc/ssl/client.key")
    assert config["OPTIONS"] == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/ca.pem",
                                 "sslcert": "/etc/ssl/client.crt", "sslkey": "/etc/ssl/client.key"}


def test_database_url_puts_application_name_in_options():
    config = database_settings("postgres://ops@db/p2p_escrow?application_name=backoffice%20web")
    assert config["OPTIONS"] == {"application_name": "backoffice web"}


def test_database_url_puts_options_target_session_attrs_and_connect_timeout_in_options():
    config = database_settings("postgres://ops@db1:5432,db2:5432/p2p_escrow?options=-c%20statement_timeout%3D5000"
                               "&target_session_attrs=read-write&connect_timeout=3")
    assert (config["HOST"], config["PORT"]) == ("db1,db2", "5432,5432")
    assert config["OPTIONS"] == {"options": "-c statement_timeout=5000", "target_session_attrs": "read-write",
                                 "connect_timeout": 3}


def test_database_url_accepts_django_environs_scheme_aliases():
    assert database_settings("pgsql://ops@db/p2p_escrow")["HOST"] == "db"
    assert database_settings("psql://ops@db/p2p_escrow")["HOST"] == "db"


@pytest.mark.parametrize(("url", "bad", "fix"), [
    ("mysql://ops@db/p2p_escrow", "'mysql'", "postgres://USER:PASSWORD@HOST:5432/NAME"),
    ("ops@db/p2p_escrow", "no scheme", "postgres://"),
    ("postgres://ops@db/p2p_escrow?sslmod=require", '"sslmod"', "sslmode"),
    ("postgres://ops@db/p2p_escrow?conn_max_age=60", '"conn_max_age"', "DB_CONN_MAX_AGE"),
    ("postgres://ops@db/p2p_escrow?sslmode=required", "sslmode='required'", "verify-full"),
    ("postgres://ops@db/p2p_escrow?target_session_attrs=rw", "target_session_attrs='rw'", "read-write"),
    ("postgres://ops@db/p2p_escrow?connect_timeout=5s", "connect_timeout='5s'", "number of seconds"),
    ("postgres://ops@db/p2p_escrow?port=postgres", "port 'postgres'", "as a number"),
    ("postgres://ops@db", "names no database", "/p2p_escrow"),
])
def test_database_url_refuses_a_bad_part_naming_it_and_the_fix(url, bad, fix):
    with pytest.raises(ImproperlyConfigured) as refused:
        database_settings(url)
    message = str(refused.value)
    assert message.startswith("DATABASE_URL ")
    assert bad in message and fix in message


def test_database_url_refusal_never_shows_the_password():
    with pytest.raises(ImproperlyConfigured) as refused:
        database_settings("postgres://ops:hunter2%zz@db/p2p_escrow")  # libpq quotes the bad token
    assert "hunter2" not in str(refused.value)


# ------------------------------------------------------------------ the settings, loaded as the processes load them


def load_database_settings(**env: str) -> subprocess.CompletedProcess:
    """DATABASES['default'] as a fresh process with this environment sees it, and the answer to SELECT 1 through it
    (None over TCP or a Unix socket alike: inet_server_addr() is NULL only over a socket)."""
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "DB_CONNECT_TIMEOUT", "DJANGO_ENV"}}
    code = ("import django, json; django.setup(); from django.conf import settings; from django.db import connection\n"
            "config = settings.DATABASES['default']\n"
            "row = None\n"
            "if config['NAME'] == 'postgres':\n"
            "    with connection.cursor() as cur:\n"
            "        cur.execute('SELECT 1, inet_server_addr() IS NULL'); row = cur.fetchone()\n"
            "print(json.dumps({'config': config, 'row': row}, default=str))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**clean, "DJANGO_SETTINGS_MODULE": "backoffice.settings", **env})


def loaded(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_database_url_keeps_db_connect_timeout_conn_max_age_and_test_database_name():
    result = load_database_settings(DATABASE_URL="postgres://ops@db/p2p_escrow?sslmode=require",
                                    DB_CONNECT_TIMEOUT="9", DB_CONN_MAX_AGE="0", TEST_DATABASE_NAME="test_other")
    config = loaded(result)["config"]
    assert config["OPTIONS"] == {"sslmode": "require", "connect_timeout": 9}
    assert config["CONN_MAX_AGE"] == 0 and config["TEST"]["NAME"] == "test_other"


def test_database_url_connect_timeout_wins_over_the_default():
    config = loaded(load_database_settings(DATABASE_URL="postgres://ops@db/p2p_escrow?connect_timeout=2"))["config"]
    assert config["OPTIONS"]["connect_timeout"] == 2


def test_database_url_and_db_connect_timeout_both_set_are_refused():
    result = load_database_settings(DATABASE_URL="postgres://ops@db/p2p_escrow?connect_timeout=2",
                                    DB_CONNECT_TIMEOUT="5")
    assert result.returncode != 0
    assert "DATABASE_URL has ?connect_timeout= and DB_CONNECT_TIMEOUT is set too" in result.stderr


def test_database_url_with_a_bad_parameter_stops_the_settings():
    result = load_database_settings(DATABASE_URL="postgres://ops@db/p2p_escrow?sslmode=on")
    assert result.returncode != 0
    assert "DATABASE_URL has sslmode='on': use one of disable" in result.stderr


@pytest.fixture
def socket_server(db) -> tuple[str, str, str]:
    """(socket directory, port, user) of the PostgreSQL the tests run on, as the server itself reports them."""
    with connection.cursor() as cur:
        cur.execute("SELECT current_setting('unix_socket_directories'), current_setting('port'), current_user")
        directories, port, user = cur.fetchone()
    directory = directories.split(",")[0].strip()
    assert directory and Path(directory).is_dir(), f"the test server listens on no socket directory: {directories!r}"
    return directory, port, user


def test_database_url_with_a_percent_encoded_socket_directory_connects_over_the_socket(socket_server):
    directory, port, user = socket_server
    url = f"postgres://{user}@{quote(directory, safe='')}:{port}/postgres"
    answer = loaded(load_database_settings(DATABASE_URL=url))
    assert answer["config"]["HOST"] == directory
    assert answer["row"] == [1, True]


def test_database_url_with_the_host_query_parameter_connects_over_the_socket(socket_server):
    directory, port, user = socket_server
    url = f"postgres://{user}@/postgres?host={directory}&port={port}&application_name=socket-test"
    answer = loaded(load_database_settings(DATABASE_URL=url))
    assert (answer["config"]["HOST"], answer["config"]["PORT"]) == (directory, port)
    assert answer["row"] == [1, True]
