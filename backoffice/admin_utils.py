"""Shared admin building blocks: fast pagination on big tables, object links, read-only mirrors, CSV export."""
from __future__ import annotations

import csv
import html
import logging
import re
from datetime import timezone
from functools import lru_cache
from typing import Any, Iterable

from django.conf import settings
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections, router, transaction
from django.http import StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import get_script_prefix, reverse
from django.utils.formats import localize
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from backoffice.audit.services import record_audit
from backoffice.db_router import ReplicaChangelistMixin, streamed_rows

logger = logging.getLogger(__name__)

COUNT_CAP = 10_000
EXPORT_CHUNK_ROWS = 2000  # rows per fetch of a CSV export's server-side cursor
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
HASH_RE = re.compile(r"^0x[0-9a-fA-F]{64}$")


class CappedCountPaginator(Paginator):
    """Never runs an exact COUNT(*) over a big table.

    Unfiltered: PostgreSQL's planner estimate (pg_class.reltuples). Filtered: counts at most
    COUNT_CAP + 1 rows, so the page shows "10,000+" instead of scanning a million.
    """

    @cached_property
    def count(self) -> int:
        qs = self.object_list
        if not qs.query.where:
            with connections[qs.db].cursor() as cur:  # the page's own database: the replica on replica reads
                cur.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                            [qs.model._meta.db_table])
                row = cur.fetchone()
            if row and row[0] and row[0] > COUNT_CAP:
                return int(row[0])
        return qs.order_by()[: COUNT_CAP + 1].count()


_MARK = 987654321987


@lru_cache(maxsize=256)
def _url_template(prefix: str, name: str) -> tuple[str, str]:
    head, _, tail = reverse(name, args=[_MARK]).partition(str(_MARK))
    return head, tail


def admin_url(obj: Any, action: str = "change") -> str:
    """reverse() once per model and action (it is slow in a 50-row changelist), then fill in the pk."""
    meta = obj._meta
    head, tail = _url_template(get_script_prefix(), f"admin:{meta.app_label}_{meta.model_name}_{action}")
    return f"{head}{obj.pk}{tail}"


def html_text(value: Any) -> str:
    """conditional_escape without its lazy-string machinery (list cells call it thousands of times)."""
    return value.__html__() if hasattr(value, "__html__") else html.escape(str(value))


def a_tag(href: str, text: Any, attrs: str = "") -> str:
    """<a href="…">text</a>, both escaped; `attrs` is trusted markup (format_html's cost per list cell, without it)."""
    return mark_safe(f'<a href="{html.escape(href)}"{attrs}>{html_text(text)}</a>')


def link(obj: Any, text: Any = None, attrs: str = "") -> str:
    if obj is None:
        return "—"
    return a_tag(admin_url(obj), text if text is not None else obj, attrs)


def wallet_link(wallet: str | None, text: Any = None, attrs: str = "") -> str:
    """A link to a wallet's profile by its address (the profile admin resolves it): no join to fetch the pk."""
    if not wallet:
        return "—"
    head, tail = _url_template(get_script_prefix(), "admin:chain_userprofile_change")
    return a_tag(f"{head}{wallet}{tail}", text if text is not None else wallet, attrs)


def copy_attrs(value: str) -> str:
    """Markup attributes that keep a shortened value's whole text: a tooltip, and data-copy, beside which
    backoffice/static/backoffice/copy.js puts a copy button."""
    escaped = html.escape(value)
    return f' title="{escaped}" data-copy="{escaped}"'


def hex_cell(value: str | None, head: int = 8, tail: int = 6) -> str:
    """A wallet or hash shortened for a list cell, which still copies (and shows on hover) in full."""
    if not value:
        return "—"
    return mark_safe(f'<span class="hex"{copy_attrs(value)}>{html.escape(short_hex(value, head, tail))}</span>')


def short_wallet_link(obj: Any, wallet: str | None) -> str:
    """A shortened wallet linking to its profile (`obj`, or by address when None), copyable in full."""
    if not wallet:
        return "—"
    text = short_hex(wallet)
    if obj is not None:
        return link(obj, text, ' class="hex"' + copy_attrs(wallet))
    return wallet_link(wallet, text, ' class="hex"' + copy_attrs(wallet))


def ipfs_links(cids: Iterable[str] | None, *, shorten: bool = False) -> str:
    """Evidence CIDs as links to the IPFS gateway, opened in a new tab ("—" for none)."""
    if not cids:
        return "—"
    gateway = settings.IPFS_GATEWAY
    return mark_safe(", ".join(a_tag(f"{gateway}{cid}", short_hex(cid, 10, 4) if shorten else cid,
                                     ' rel="noopener noreferrer" target="_blank"') for cid in cids))


def admin_page(model_admin, request, template: str, **context) -> TemplateResponse:
    """One of an admin's own pages (a confirmation, report or form) in the admin's frame: site context and opts."""
    return TemplateResponse(request, template, {**model_admin.admin_site.each_context(request),
                                                "opts": model_admin.model._meta, **context})


def errors_to_form(form, exc: ValidationError) -> None:
    """A service's ValidationError shown on the form that called it: on its field when the form has one."""
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        form.add_error(None, exc.messages)


def changelist_link(model: Any, text: str, **params: Any) -> str:
    meta = model._meta
    url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return format_html('<a href="{}?{}">{}</a>', url, query, text)


def utc_minute(value) -> str:
    """A timestamp as staff read it in lists: UTC to the minute, without the template engine's date filter."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M") if value else "—"


def short_hex(value: str | None, head: int = 8, tail: int = 6) -> str:
    if not value:
        return "—"
    return value if len(value) <= head + tail + 1 else f"{value[:head]}…{value[-tail:]}"


class IndexedValuesFilter(admin.AllValuesFieldListFilter):
    """Django's all-values filter for an indexed column, its choices read by a skip scan of the index (one
    probe per distinct value) instead of SELECT DISTINCT over every row: for tables that only grow."""

    MAX_CHOICES = 200

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        if field_path != field.name or field.model is not model:
            return  # a related path: Django's own query
        table, column = model._meta.db_table, field.column
        db = connections[router.db_for_read(model)]  # the page's own database: the replica on replica reads
        qn = db.ops.quote_name
        with db.cursor() as cur:
            cur.execute(
                f"WITH RECURSIVE t(v) AS ((SELECT {qn(column)} FROM {qn(table)} ORDER BY 1 LIMIT 1) UNION ALL "
                f"SELECT (SELECT {qn(column)} FROM {qn(table)} WHERE {qn(column)} > t.v ORDER BY 1 LIMIT 1) "
                f"FROM t WHERE t.v IS NOT NULL) SELECT v FROM t WHERE v IS NOT NULL LIMIT %s", [self.MAX_CHOICES])
            self.lookup_choices = [row[0] for row in cur.fetchall()]


class _FastChangeList(ChangeList):
    def url_for_result(self, result) -> str:
        return admin_url(result)  # one reverse() per page, not one per row


class FastRowsMixin:
    """Cheaper changelist rows: a 50-row page of a big table spends most of its time rendering, not querying.

    The row checkbox is formatted directly instead of through the form-widget templates, and each row's
    link fills in a URL template instead of calling reverse(). The markup is Django's own.
    """

    @admin.display(description=mark_safe('<input type="checkbox" id="action-toggle">'))
    def action_checkbox(self, obj):
        return format_html('<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
                           helpers.ACTION_CHECKBOX_NAME, obj.pk,
                           format_html("Select this object for an action - {}", obj))

    # Rows built by backoffice.templatetags.fast_admin_list when every column is a display method.
    change_list_template = "admin/fast_change_list.html"

    def get_changelist(self, request, **kwargs):
        return _FastChangeList


class ReadOnlyAdminMixin:
    """Records nobody edits in the admin (superusers included): they are written by services only."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class ReadOnlyMirrorAdmin(ReplicaChangelistMixin, ReadOnlyAdminMixin, FastRowsMixin, admin.ModelAdmin):
    """The chain is the source of truth: staff look, the sync writes. The lists read from the replica when one
    is configured (backoffice.db_router); detail pages and actions read the primary."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    list_per_page = 50


def csv_response(filename: str, header: list[str], rows: Iterable[Iterable[Any]]) -> StreamingHttpResponse:
    """Stream a CSV download (UTC times, ISO format) without building it in memory. If `rows` fails midway, the file
    ends with an EXPORT FAILED line."""

    class _Echo:
        def write(self, value: str) -> str:
            return value

    writer = csv.writer(_Echo())

    def _cells(row: Iterable[Any]) -> list[str]:
        out = []
        for value in row:
            if hasattr(value, "isoformat"):
                out.append(value.isoformat())
            elif value is None:
                out.append("")
            else:
                text = str(value)
                # A leading =, +, - or @ (or tab / CR, which spreadsheets skip) would run as a formula.
                out.append("'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text)
                           else text)
        return out

    def _stream():
        yield writer.writerow(header)
        written = 0
        try:
            for row in rows:
                yield writer.writerow(_cells(row))
                written += 1
        except Exception as exc:
            # The status (200) and the first rows are sent: the file itself must say it is incomplete, or it would
            # pass for the whole export.
            logger.exception("a CSV download failed after %d rows", written, extra={"download": filename})
            yield writer.writerow([f"EXPORT FAILED after {written} rows ({type(exc).__name__}): this file is "
                                   "incomplete. Export again; the server log has the details."])

    response = StreamingHttpResponse(_stream(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def export_csv_action(fields: list[str], filename: str):
    """A changelist action exporting the selected rows' given fields."""

    @admin.action(description="Export selected to CSV")
    def export_csv(modeladmin, request, queryset):
        # Read-only: from the replica when usable, its query run now (the rows stream after the view returns).
        rows = streamed_rows(queryset.values_list(*fields), chunk_size=EXPORT_CHUNK_ROWS)
        return csv_response(filename, fields, rows)

    return export_csv


__all__ = ["CappedCountPaginator", "FastRowsMixin", "IndexedValuesFilter", "ReadOnlyMirrorAdmin", "a_tag",
           "admin_page", "errors_to_form", "html_text", "link", "wallet_link", "changelist_link", "admin_url",
           "short_hex", "hex_cell", "copy_attrs", "short_wallet_link", "csv_response", "export_csv_action", "localize",
           "ADDRESS_RE", "HASH_RE"]


class AuditedConfigAdmin(admin.ModelAdmin):
    """Configuration edited in the admin is still audited: before/after of the changed fields."""

    def save_model(self, request, obj, form, change):
        before = {f: form.initial.get(f) for f in form.changed_data} if change else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record_audit(actor=request.user, action=f"{'change' if change else 'add'}_{obj._meta.model_name}", obj=obj,
                         before=before, after={f: form.cleaned_data.get(f) for f in form.changed_data})

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
