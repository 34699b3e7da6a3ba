"""Admin of backups: the Backups page (runs, restore tests, sizes, durations), downloads and the restore-test button
for ops admins. Backups and restore tests are written by ops.backups only; here they are read."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import FileResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from backoffice.admin_utils import ReadOnlyAdminMixin, utc_minute
from backoffice.security import stepup_required
from ops.models import BackupRun, BackupStatus, RestoreTest

from . import services as backups
from .selectors import RESTORE_TEST_MAX_AGE, age_text, backup_health
from .tools import backup_dir

DOWNLOAD_PERM = "ops.download_backuprun"
TEST_PERM = "ops.test_backuprun"
HIDDEN_DIRECTORY = "…"


def _is_ops_admin(request) -> bool:
    """Who may see where the dumps lie on the server: those who may download them (ops admins)."""
    return request.user.has_perm(DOWNLOAD_PERM)


def _without_backup_directory(text: str, backup: BackupRun | None) -> str:
    """An error as the other roles read it: the server's backup directory (BACKUP_DIR, and the one the run's file
    lies in) replaced by an ellipsis; the file's own name stays."""
    directories = {str(backup_dir()[0])}
    if backup is not None and backup.file_path:
        directories.add(str(Path(backup.file_path).parent))
    for directory in sorted(directories, key=len, reverse=True):
        if len(directory) > 1:  # not "/" or "."
            text = text.replace(directory, HIDDEN_DIRECTORY)
    return text


def _swap(fields: tuple[str, ...], swaps: dict[str, str | None]) -> tuple[str, ...]:
    return tuple(swaps.get(f, f) for f in fields if swaps.get(f, f) is not None)


def _mb(size: int | None) -> str:
    return "—" if size is None else f"{size / 1e6:,.1f} MB"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:,.1f} s"


def _checks_table(test: RestoreTest, detail: Callable[[str], str]) -> str:
    if not test.checks:
        return "—"
    rows = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                            ((c["name"], "ok" if c["ok"] else "FAILED", _seconds(c["seconds"]), detail(c["detail"]))
                             for c in test.checks))
    return format_html("<table><tr><th>check</th><th>result</th><th>duration</th><th>detail</th></tr>{}</table>", rows)


@admin.register(BackupRun)
class BackupRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("started", "status", "trigger", "actor_label", "size", "duration", "rows", "sha256_short",
                    "download", "error_short")
    list_filter = ("status", "trigger")
    change_list_template = "admin/ops/backuprun/change_list.html"
    readonly_fields = ("started_at", "finished_at", "status", "trigger", "actor_label", "file_path", "size",
                       "duration", "sha256", "row_counts", "schema_version", "pg_dump_version", "error",
                       "file_deleted_at", "download")

    @admin.display(description="started (UTC)", ordering="started_at")
    def started(self, obj: BackupRun) -> str:
        return utc_minute(obj.started_at)

    @admin.display(description="size", ordering="size_bytes")
    def size(self, obj: BackupRun) -> str:
        return _mb(obj.size_bytes)

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, obj: BackupRun) -> str:
        return _seconds(obj.duration_seconds)

    @admin.display(description="rows (orders / audit / actions / blacklist)")
    def rows(self, obj: BackupRun) -> str:
        counts = obj.row_counts or {}
        return " / ".join(f"{counts[k]:,}" if k in counts else "—" for k in backups.KEY_TABLES) if counts else "—"

    @admin.display(description="SHA-256")
    def sha256_short(self, obj: BackupRun) -> str:
        return f"{obj.sha256[:12]}…" if obj.sha256 else "—"

    @admin.display(description="error")
    def error_short(self, obj: BackupRun) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:80] + "…"

    @admin.display(description="error")
    def error_short_for_role(self, obj: BackupRun) -> str:
        error = _without_backup_directory(obj.error, obj)
        return error if len(error) <= 80 else error[:80] + "…"

    @admin.display(description="error")
    def error_for_role(self, obj: BackupRun) -> str:
        return _without_backup_directory(obj.error, obj) or "—"

    @admin.display(description="file")
    def file_name(self, obj: BackupRun) -> str:
        if obj.status != BackupStatus.OK:
            return "—"
        if obj.file_deleted_at is not None:
            return f"removed {utc_minute(obj.file_deleted_at)}"
        return Path(obj.file_path).name

    @admin.display(description="file")
    def download(self, obj: BackupRun) -> str:
        if obj.status != BackupStatus.OK or obj.file_deleted_at is not None:
            return self.file_name(obj)
        return format_html('<a href="{}">download</a>', reverse("admin:ops_backuprun_download", args=[obj.pk]))

    # Downloads, and where the dumps lie on the server, are for ops admins: everyone else sees the file's name
    # (not a link, nor its directory), and errors without the directory.
    def get_list_display(self, request):
        if _is_ops_admin(request):
            return self.list_display
        return _swap(self.list_display, {"download": "file_name", "error_short": "error_short_for_role"})

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if _is_ops_admin(request):
            return self.readonly_fields
        return _swap(self.readonly_fields, {"file_path": "file_name", "download": None, "error": "error_for_role"})

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [path("<int:pk>/download/", wrap(self.download_view), name="ops_backuprun_download"),
                path("restore-test/", wrap(self.restore_test_view), name="ops_backuprun_restore_test"),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        health = backup_health()
        tests = list(RestoreTest.objects.select_related("backup")[:10])
        ops_admin = _is_ops_admin(request)
        context = {
            "backup_health": health, "backup_age": age_text(health.backup_age),
            "restore_test_age": age_text(health.restore_test_age),
            "restore_test_max_days": RESTORE_TEST_MAX_AGE.days,
            "restore_tests": [{"test": t, "url": reverse("admin:ops_restoretest_change", args=[t.pk]),
                               "created": utc_minute(t.created_at), "duration": _seconds(t.duration_seconds),
                               "checks": t.checks,
                               "error": t.error if ops_admin else _without_backup_directory(t.error, t.backup)}
                              for t in tests],
            "can_test": request.user.has_perm(TEST_PERM),
        }
        return super().changelist_view(request, {**(extra_context or {}), **context})

    # A dump holds every password hash, TOTP key and session: a fresh one-time code first, even for a GET.
    @stepup_required
    def download_view(self, request, pk: int):
        if not request.user.has_perm(DOWNLOAD_PERM):
            raise PermissionDenied
        backup = get_object_or_404(BackupRun, pk=pk)
        try:
            file_path = backups.record_backup_download(actor=request.user, backup=backup)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:ops_backuprun_changelist"))
        return FileResponse(open(file_path, "rb"), as_attachment=True, filename=file_path.name,
                            content_type="application/octet-stream")

    def restore_test_view(self, request):
        if not request.user.has_perm(TEST_PERM):
            raise PermissionDenied
        if request.method != "POST":  # a bookmarked or retyped URL: the button lives on the Backups page
            return HttpResponseRedirect(reverse("admin:ops_backuprun_changelist"))
        try:
            test = backups.request_restore_test(actor=request.user)
        except ValidationError as exc:
            self.message_user(request, " ".join(exc.messages), messages.ERROR)
        else:
            self.message_user(request, f"{test} queued for {test.backup}: a worker restores it into a scratch "
                                       f"database; the result appears below.")
        return HttpResponseRedirect(reverse("admin:ops_backuprun_changelist"))


@admin.register(RestoreTest)
class RestoreTestAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("created", "status", "backup", "actor_label", "duration", "checks_summary", "error_short")
    list_filter = ("status",)
    list_select_related = ("backup",)
    readonly_fields = ("backup", "status", "actor_label", "requested_by", "created_at", "started_at", "finished_at",
                       "duration", "scratch_database", "checks_table", "error")
    fields = readonly_fields

    @admin.display(description="requested (UTC)", ordering="created_at")
    def created(self, obj: RestoreTest) -> str:
        return utc_minute(obj.created_at)

    @admin.display(description="duration", ordering="duration_seconds")
    def duration(self, obj: RestoreTest) -> str:
        return _seconds(obj.duration_seconds)

    @admin.display(description="checks")
    def checks_summary(self, obj: RestoreTest) -> str:
        return ", ".join(f"{c['name']} {'ok' if c['ok'] else 'FAILED'}" for c in obj.checks) or "—"

    @admin.display(description="error")
    def error_short(self, obj: RestoreTest) -> str:
        return obj.error if len(obj.error) <= 80 else obj.error[:80] + "…"

    @admin.display(description="error")
    def error_short_for_role(self, obj: RestoreTest) -> str:
        error = _without_backup_directory(obj.error, obj.backup)
        return error if len(error) <= 80 else error[:80] + "…"

    @admin.display(description="error")
    def error_for_role(self, obj: RestoreTest) -> str:
        return _without_backup_directory(obj.error, obj.backup) or "—"

    # As on the backups: the directory of the dumps only for ops admins.
    def get_list_display(self, request):
        if _is_ops_admin(request):
            return self.list_display
        return _swap(self.list_display, {"error_short": "error_short_for_role"})

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj)

    def get_readonly_fields(self, request, obj=None):
        if _is_ops_admin(request):
            return self.readonly_fields
        return _swap(self.readonly_fields, {"error": "error_for_role", "checks_table": "checks_table_for_role"})

    @admin.display(description="checks")
    def checks_table(self, obj: RestoreTest) -> str:
        return _checks_table(obj, lambda detail: detail)

    @admin.display(description="checks")
    def checks_table_for_role(self, obj: RestoreTest) -> str:
        # A failed check's detail is its error (the checksum's names the dump's absolute path).
        return _checks_table(obj, lambda detail: _without_backup_directory(detail, obj.backup))
