"""What staff see of backups: the Backups page, downloads and the restore-test button, the dashboard tile, the
/metrics ages and the daily check's line."""
from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from backoffice.audit.models import AuditLog
from ops.models import BackupRun, RestoreTest, RestoreTestStatus
from ops.monitoring import dashboard, metrics
from ops.monitoring.checks import daily as daily_checks
from tests.ops.test_metrics import TOKEN, scrape

pytestmark = pytest.mark.django_db


def _backup(tmp_path, *, hours_ago: float = 2, content: bytes = b"PGDMP test dump") -> BackupRun:
    finished = timezone.now() - timedelta(hours=hours_ago)
    path = tmp_path / f"p2p-{hours_ago}.dump"
    path.write_bytes(content)
    return BackupRun.objects.create(started_at=finished - timedelta(seconds=5), finished_at=finished, status="ok",
                                    trigger="schedule", actor_label="system:backup_database", file_path=str(path),
                                    size_bytes=len(content), sha256=hashlib.sha256(content).hexdigest(),
                                    duration_seconds=5.0, row_counts={"orders": 3, "audit_log": 7,
                                                                      "contract_actions": 1, "blacklist": 2})


def _passed_test(backup: BackupRun, *, days_ago: float) -> RestoreTest:
    at = timezone.now() - timedelta(days=days_ago)
    return RestoreTest.objects.create(backup=backup, actor_label="system:test_backup_restore", created_at=at,
                                      started_at=at, finished_at=at, status=RestoreTestStatus.PASSED,
                                      duration_seconds=12.5,
                                      checks=[{"name": "checksum", "ok": True, "seconds": 0.1, "detail": "ok"}])


@pytest.fixture
def staff(django_user_model):
    def make(role: str):
        user = django_user_model.objects.create_user(role.replace(" ", "-"), is_staff=True)
        user.groups.set([Group.objects.get(name=role)])
        return user
    return make


def test_backups_page_shows_runs_and_restore_tests_with_download_links_only_for_ops_admins(client, staff, tmp_path):
    backup = _backup(tmp_path)
    _passed_test(backup, days_ago=1)
    download = reverse("admin:ops_backuprun_download", args=[backup.pk])

    client.force_login(staff("viewer"))
    page = client.get(reverse("admin:ops_backuprun_changelist")).content.decode()
    assert "Last good backup" in page and "2 h ago" in page and "1 d ago" in page
    assert "3 / 7 / 1 / 2" in page and "0.0 MB" in page and "5.0 s" in page
    assert download not in page and backup.file_path.rsplit("/", 1)[1] in page
    assert "Test restore of the newest backup" not in page
    assert client.get(download).status_code == 403

    client.force_login(staff("ops admin"))
    page = client.get(reverse("admin:ops_backuprun_changelist")).content.decode()
    assert download in page and "Test restore of the newest backup" in page
    response = client.get(download)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b"PGDMP test dump"
    assert AuditLog.objects.filter(action="download_backup", object_id=str(backup.pk)).exists()


def test_backups_show_other_roles_the_file_name_and_only_ops_admins_the_directory(client, staff, tmp_path, settings):
    """Issue 22, finding 4: a viewer read the dump's absolute path on the server on its change page."""
    settings.BACKUP_DIR = str(tmp_path)
    backup = _backup(tmp_path)
    now = timezone.now()
    failed = BackupRun.objects.create(started_at=now, finished_at=now, status="failed", trigger="schedule",
                                      actor_label="system:backup_database",
                                      error=f"BACKUP_DIR {tmp_path} is not writable by this user (uid 1000): give it "
                                            "write permission (chown/chmod) or set BACKUP_DIR to a writable directory.")
    missing = f"the dump {backup.file_path} is missing: it was moved or deleted"
    # As run_restore_test records it: the failed check's detail is the error too.
    test = RestoreTest.objects.create(backup=backup, actor_label="system:test_backup_restore", created_at=now,
                                      started_at=now, finished_at=now, status=RestoreTestStatus.FAILED,
                                      error=missing, checks=[{"name": "checksum", "ok": False, "seconds": 0.0,
                                                              "detail": missing}])
    pages = [reverse("admin:ops_backuprun_change", args=[backup.pk]),
             reverse("admin:ops_backuprun_change", args=[failed.pk]),
             reverse("admin:ops_restoretest_change", args=[test.pk]),
             reverse("admin:ops_backuprun_changelist"), reverse("admin:ops_restoretest_changelist")]
    name = backup.file_path.rsplit("/", 1)[1]

    for role in ("viewer", "dispute reviewer", "contract approver"):
        client.force_login(staff(role))
        seen = {url: client.get(url) for url in pages}
        assert {url: r.status_code for url, r in seen.items()} == dict.fromkeys(pages, 200)
        assert not [url for url, r in seen.items() if str(tmp_path) in r.content.decode()], role
        assert name in seen[pages[0]].content.decode()
        assert "is not writable by this user" in seen[pages[1]].content.decode()
        assert seen[pages[2]].content.decode().count(f"the dump …/{name} is missing") == 2  # the error, the check

    client.force_login(staff("ops admin"))
    assert backup.file_path in client.get(pages[0]).content.decode()
    assert client.get(pages[2]).content.decode().count(f"the dump {backup.file_path} is missing") == 2
    assert f"BACKUP_DIR {tmp_path} is not writable" in client.get(pages[1]).content.decode()


def test_backups_download_needs_a_fresh_step_up(client, staff, tmp_path):
    from tests.staff_helpers import STEPUP, make_stepup_stale

    backup = _backup(tmp_path)
    download = reverse("admin:ops_backuprun_download", args=[backup.pk])
    client.force_login(staff("ops admin"))
    make_stepup_stale(client)

    response = client.get(download)

    assert response.status_code == 302 and response["Location"].startswith(STEPUP)
    assert not AuditLog.objects.filter(action="download_backup").exists()


def test_backups_restore_test_button_queues_an_audited_test(client, staff, tmp_path,
                                                           django_capture_on_commit_callbacks):
    backup = _backup(tmp_path)
    admin_user = staff("ops admin")
    client.force_login(admin_user)

    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(reverse("admin:ops_backuprun_restore_test"))

    assert response.status_code == 302
    test = RestoreTest.objects.get()
    assert test.status == RestoreTestStatus.QUEUED and test.backup == backup and test.requested_by == admin_user
    assert AuditLog.objects.filter(action="request_restore_test", actor_label=admin_user.username).exists()
    assert len(callbacks) == 1  # the worker's task, sent once the request's transaction commits
    # A second press while it is queued is refused with the reason, not queued twice.
    response = client.post(reverse("admin:ops_backuprun_restore_test"), follow=True)
    assert "already queued" in response.content.decode()
    assert RestoreTest.objects.count() == 1


def test_backups_restore_test_button_without_a_good_backup_says_what_to_do(client, staff):
    client.force_login(staff("ops admin"))

    response = client.post(reverse("admin:ops_backuprun_restore_test"), follow=True)

    assert "no good backup to test" in response.content.decode()
    assert not RestoreTest.objects.exists()


def test_dashboard_backup_tile_shows_both_ages_against_the_alert_thresholds(tmp_path):
    tile = next(t for t in dashboard.tiles() if t.key == "backups")
    assert (tile.value, tile.status, tile.detail) == ("never", "error", "restore test passed never")

    backup = _backup(tmp_path, hours_ago=3)
    tile = next(t for t in dashboard.tiles() if t.key == "backups")
    assert (tile.value, tile.status) == ("3 h ago", "warning")  # no restore test yet

    _passed_test(backup, days_ago=1.5)
    tile = next(t for t in dashboard.tiles() if t.key == "backups")
    assert (tile.value, tile.status, tile.detail) == ("3 h ago", "ok", "restore test passed 1 d 12 h ago")

    BackupRun.objects.update(finished_at=timezone.now() - timedelta(hours=27))
    assert next(t for t in dashboard.tiles() if t.key == "backups").status == "error"


def test_metrics_export_the_ages_of_the_last_good_backup_and_restore_test(client, settings, tmp_path):
    settings.METRICS_TOKEN = TOKEN
    m = scrape(client)
    assert m[("backup_last_success_age_seconds", ())] == float("inf")
    assert m[("backup_restore_test_last_success_age_seconds", ())] == float("inf")

    _passed_test(_backup(tmp_path, hours_ago=2), days_ago=3)
    metrics.reset_cache()
    m = scrape(client)
    assert m[("backup_last_success_age_seconds", ())] == pytest.approx(7200, abs=60)
    assert m[("backup_restore_test_last_success_age_seconds", ())] == pytest.approx(3 * 86400, abs=60)


def test_metrics_export_an_age_of_zero_as_zero_not_never(client, settings, tmp_path):
    # A finish time ahead of the server's clock is clamped to an age of zero: that is "just now", not +Inf.
    settings.METRICS_TOKEN = TOKEN
    _passed_test(_backup(tmp_path, hours_ago=-0.1), days_ago=-0.01)
    metrics.reset_cache()

    m = scrape(client)

    assert m[("backup_last_success_age_seconds", ())] == 0
    assert m[("backup_restore_test_last_success_age_seconds", ())] == 0


def test_daily_check_mentions_the_last_backup_and_restore_test(tmp_path):
    _passed_test(_backup(tmp_path, hours_ago=5), days_ago=9)

    report = daily_checks.daily_operations_check()

    assert "8. Backups: last good backup 5 h ago (0.0 MB); last passed restore test 9 d ago — OVER 8 days" \
        in report.text
    assert report.data["backups"]["last_good_backup_age_s"] == pytest.approx(5 * 3600, abs=60)
