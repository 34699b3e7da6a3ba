"""DATABASE_URL in the forms libpq users write, parsed by libpq itself and mapped into Django's DATABASES entry.

libpq (through psycopg's conninfo_to_dict, i.e. PQconninfoParse) is the reference for these URLs: it decodes a
percent-encoded socket directory (postgres://user@%2Fvar%2Frun%2Fpostgresql/db), reads ?host= and ?port=, and
refuses a query parameter it does not know. What libpq only checks when it connects (sslmode's spelling, a
numeric port) is checked here, so that a typo stops the settings instead of the first request.
"""
from __future__ import annotations

import functools
from typing import Any
from urllib.parse import unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured
from psycopg import ProgrammingError
from psycopg.conninfo import conninfo_to_dict

ENGINE = "django.db.backends.postgresql"
# postgres:// and postgresql:// are libpq's; psql:// and pgsql:// are django-environ's aliases, kept so that a URL
# that worked before still does.
SCHEMES = {"postgres": "postgres", "postgresql": "postgresql", "psql": "postgresql", "pgsql": "postgresql"}
CHOICES = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
}
COMMON_PARAMETERS = ("host", "port", "sslmode", "sslrootcert", "sslcert", "sslkey", "application_name",
                     "connect_timeout", "options", "target_session_attrs")
# Django's own keys; every other libpq keyword goes to psycopg as a connection option.
DJANGO_KEYS = {"dbname": "NAME", "user": "USER", "password": "PASSWORD", "host": "HOST", "port": "PORT"}


def _refuse(problem: str, fix: str, *, setting: str = "DATABASE_URL") -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{setting} {problem}: {fix}.")


def _redact(message: str, url: str) -> str:
    """A libpq message may quote part of the URL: never print its password."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return message
    for form in filter(None, {password, password and unquote(password)}):
        message = message.replace(form, "***")
    return message


def database_settings(url: str, setting: str = "DATABASE_URL") -> dict[str, Any]:
    """A DATABASES entry (ENGINE, NAME, USER, PASSWORD, HOST, PORT, OPTIONS) for a postgres:// URL.

    Raises ImproperlyConfigured naming `setting` (DATABASE_URL, DATABASE_REPLICA_URL), the bad part of the URL
    and how to fix it.
    """
    refuse = functools.partial(_refuse, setting=setting)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        shown = f"starts with {scheme[:20]!r}://" if sep else "has no scheme"
        raise refuse(f"must start with postgres:// (it {shown})",
                      "write postgres://USER:PASSWORD@HOST:5432/NAME, or "
                      "postgres://USER@%2Fvar%2Frun%2Fpostgresql/NAME for a Unix socket")
    try:
        params = conninfo_to_dict(f"{SCHEMES[scheme.lower()]}://{rest}")
    except ProgrammingError as exc:
        raise refuse(f"is not a URL libpq accepts ({_redact(str(exc).strip(), url)})",
                      f"use libpq's query parameters ({', '.join(COMMON_PARAMETERS)}), percent-encode '/', '@', ':' "
                      "and '%' inside names and passwords, and set Django's connection age with DB_CONN_MAX_AGE, "
                      "not in the URL") from None
    for name, allowed in CHOICES.items():
        if name in params and params[name] not in allowed:
            raise refuse(f"has {name}={params[name]!r}", f"use one of {', '.join(allowed)}")
    for port in params.get("port", "").split(","):
        if port and not port.isdigit():
            raise refuse(f"has port {port!r}", "write the port as a number, e.g. :5432 or ?port=5432")
    if "connect_timeout" in params:
        if not params["connect_timeout"].isdigit():
            raise refuse(f"has connect_timeout={params['connect_timeout']!r}", "write a number of seconds, e.g. 5")
        params["connect_timeout"] = int(params["connect_timeout"])
    if not params.get("dbname"):
        raise refuse("names no database", "end the URL with the database name, e.g. /p2p_escrow")
    config: dict[str, Any] = {"ENGINE": ENGINE, **{key: "" for key in DJANGO_KEYS.values()}, "OPTIONS": {}}
    for name, value in params.items():
        if name in DJANGO_KEYS:
            config[DJANGO_KEYS[name]] = value
        else:
            config["OPTIONS"][name] = value
    return config


# A replica that hangs (packets dropped on an open connection, a server that accepts and never answers) must not
# hold a web thread for long: libpq's shortest connect timeout; TCP keepalives, so that an idle socket whose peer went
# silent is closed after ~11 s (5 s idle, then 3 probes 2 s apart); tcp_user_timeout, so that a query the peer never
# acknowledges fails after 10 s; and a statement timeout, so that a query the replica runs (or waits on: a recovery
# conflict) ends after 30 s. The page then reads the primary (backoffice.db_router).
REPLICA_CONNECTION_DEFAULTS = {"connect_timeout": 2, "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                               "keepalives_count": 3, "tcp_user_timeout": 10_000}
REPLICA_STATEMENT_TIMEOUT = "30s"


def replica_options(options: dict[str, Any]) -> dict[str, Any]:
    """The replica alias's OPTIONS: `options` (from DATABASE_REPLICA_URL) with the defaults above for what it does
    not set; a statement_timeout goes into libpq's `options` unless that already names one."""
    merged = {**REPLICA_CONNECTION_DEFAULTS, **options}
    server = merged.get("options", "")
    if "statement_timeout" not in server:
        merged["options"] = f"{server} -c statement_timeout={REPLICA_STATEMENT_TIMEOUT}".strip()
    return merged
