"""Test configuration: real PostgreSQL and Redis (started by `make test` when not configured)."""
from __future__ import annotations

import pytest
from django.db import connection


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """Let Django flush audit_log between transactional tests in the throw-away test database only."""
    with django_db_blocker.unblock():
        with connection.cursor() as cur:
            cur.execute(f'ALTER DATABASE "{connection.settings_dict["NAME"]}" SET bo.allow_truncate_audit = \'on\'')
        connection.close()


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("alice", password="correct-horse-battery", is_staff=True,
                                                  is_superuser=True)


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client
