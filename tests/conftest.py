"""Test configuration: real PostgreSQL and Redis (started by `make test` when not configured)."""
from __future__ import annotations

import os

import pytest
from django.db import connection
from django.test import Client
from hypothesis import settings as hypothesis_settings

# The suite gates every landing, so the property tests draw the same inputs on every run: a new input found by
# chance would block an unrelated change. `HYPOTHESIS_PROFILE=explore make test` draws new ones (run it after
# touching parsing or validation, and keep any failure it finds as an @example).
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _force_login_is_two_factor(monkeypatch):
    """In tests, `client.force_login(staff)` stands for a completed password + one-time-code login
    (with a fresh step-up). The real two-factor flow is tested in tests/test_staff_access.py."""
    original = Client.force_login

    def force_login(self, user, backend=None):
        original(self, user, backend)
        if user.is_staff:
            from backoffice.testing import verify_second_factor

            verify_second_factor(self, user)

    monkeypatch.setattr(Client, "force_login", force_login)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Let Django flush audit_log between transactional tests in the throw-away test database only."""
    with django_db_blocker.unblock():
        with connection.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{connection.settings_dict["NAME"]}" SET bo.allow_truncate_audit = \'on\'')
        connection.close()
    yield
    # The health check's worker threads keep connections open: end them so the database can be dropped.
    with django_db_blocker.unblock():
        with connection.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("alice", password="correct-horse-battery", is_staff=True,
                                                  is_superuser=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture
def no_chain(settings, tmp_path):
    """No chain configured (the health tiles say 'not configured' and call no node); nothing cached between tests,
    and the health pool's threads do not keep connections to the test database."""
    from chain import rpc
    from ops.monitoring import health
    from tests.ops.test_health import close_health_pool_connections

    settings.CHAIN_DEPLOYMENT_FILE = tmp_path / "no-deployment.json"
    rpc.reset_clients()
    health.reset_cache()
    yield
    health.reset_cache()
    rpc.reset_clients()
    close_health_pool_connections()
