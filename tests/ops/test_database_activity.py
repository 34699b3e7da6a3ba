"""RB-02 on the back office's own database, read from pg_stat_activity on the real PostgreSQL: connections by
state, the longest queries, and ending the idle ones (audited, ops admins only)."""
from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django.urls import reverse

from backoffice.audit.models import AuditLog
from ops.console import selectors, services

pytestmark = pytest.mark.django_db


def conninfo() -> str:
    s = connection.settings_dict
    return psycopg.conninfo.make_conninfo(host=s["HOST"], port=s["PORT"], dbname=s["NAME"], user=s["USER"],
                                          password=s["PASSWORD"] or None, application_name="rb02-test")


@pytest.fixture
def idle_connection():
    conn = psycopg.connect(conninfo(), autocommit=True)
    conn.execute("SELECT 1")
    yield conn
    conn.close()


@pytest.fixture
def slow_query():
    conn = psycopg.connect(conninfo(), autocommit=True)
    worker = threading.Thread(target=lambda: conn.execute("SELECT pg_sleep(3)"))
    worker.start()
    time.sleep(0.5)
    yield conn
    worker.join()
    conn.close()


def test_database_activity_counts_states_and_lists_the_running_query(idle_connection, slow_query):
    activity = selectors.database_activity(idle_seconds=0)
    states = dict(activity.by_state)
    assert states.get("idle", 0) >= 1 and states.get("active", 0) >= 1 and activity.max_connections > 0
    assert any("pg_sleep(3)" in q["query"] and q["application"] == "rb02-test" for q in activity.running)
    assert any(c["application"] == "rb02-test" for c in activity.idle_long)


def test_terminate_idle_connections_ends_only_idle_ones_and_audits_the_pids(staff_user, idle_connection, slow_query):
    time.sleep(1.1)
    idle_pid = idle_connection.info.backend_pid
    ended = services.terminate_idle_connections(actor=staff_user, reason="RB-02: pool exhausted", idle_seconds=1,
                                                pids=[idle_pid, slow_query.info.backend_pid])
    assert idle_pid in ended and slow_query.info.backend_pid not in ended
    with pytest.raises(psycopg.OperationalError):
        idle_connection.execute("SELECT 1")
    row = AuditLog.objects.get(action="terminate_idle_connections")
    assert idle_pid in row.after["ended"] and row.reason == "RB-02: pool exhausted"


def test_terminate_idle_connections_needs_the_role_and_a_reason(django_user_model, staff_user):
    clerk = django_user_model.objects.create_user("clerk", is_staff=True)
    with pytest.raises(PermissionDenied):
        services.terminate_idle_connections(actor=clerk, reason="x", pids=[])
    with pytest.raises(ValidationError, match="reason is required"):
        services.terminate_idle_connections(actor=staff_user, reason=" ", pids=[])


def test_database_page_shows_the_three_steps_and_ends_the_idle_ones_it_listed(client, django_user_model,
                                                                             idle_connection, settings):
    admin_user = django_user_model.objects.create_user("opsadmin", is_staff=True)
    admin_user.user_permissions.set(Permission.objects.filter(
        codename__in=["view_database_activity", "terminate_idle_connections", "view_opsreport"]))
    client.force_login(admin_user)
    url = reverse("admin:ops_opsreport_database")
    page = client.get(url).content.decode()
    assert "1. Connections by state" in page and "2. Longest running queries" in page and "max_connections" in page
    assert f'href="{url}"' in client.get(reverse("admin:ops_opsreport_changelist")).content.decode()
    response = client.post(url, {"reason": "RB-02 drill", "pids": str(idle_connection.info.backend_pid)})
    assert response.status_code == 302
    # Idle for seconds, not ten minutes: listed nowhere, ended never.
    assert AuditLog.objects.get(action="terminate_idle_connections").after["ended"] == []
    idle_connection.execute("SELECT 1")
