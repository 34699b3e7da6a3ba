"""Which database a query goes to: the primary, except the reads of explicitly whitelisted read-only pages.

Reads go to the replica only inside a "replica reads" context, which `with_replica_reads` opens for one GET of a
whitelisted view: the changelists of read-only ModelAdmins (`ReplicaChangelistMixin`), the dashboard, its chart
CSVs, and CSV exports (`replica_alias()` bound to their queryset). Everywhere else, and by default, every read and
every write uses the primary: services, tasks, management commands, every POST, and every page that decides on
what it shows (an approval, a blacklist form, a contract action, a dispute review) read what was just written, not
a copy up to DATABASE_REPLICA_MAX_LAG_SECONDS old. Even inside the context:

- a write always goes to the primary, and so does every read inside a transaction on the primary (a service
  called from such a page reads its own writes);
- who may see what (users, groups, permissions, sessions, second-factor devices, lockouts, schedules) is read from
  the primary: a revoked permission takes effect at once;
- the replica is used only while backoffice.replica says it is usable (reachable, a standby, lag within the
  limit); a query that fails on it mid-page makes the page run again on the primary.

A CSV export streams after its view has returned, outside any context: `streamed_rows` runs its query on the
replica (or the primary) before the view returns, so that the same fallback applies.
"""
from __future__ import annotations

import contextvars
import functools
import itertools
import logging
from collections.abc import Iterable, Iterator

from django.db import DEFAULT_DB_ALIAS, InterfaceError, OperationalError, connections
from django.template.response import SimpleTemplateResponse

from . import replica

logger = logging.getLogger(__name__)

# What a replica that died, hung up or cancelled a query raises.
READ_ERRORS = (OperationalError, InterfaceError)

# The alias the current page reads from; None outside a replica-reads context (then: the primary).
_read_alias: contextvars.ContextVar[str | None] = contextvars.ContextVar("replica_reads", default=None)

# Access decisions and the beat schedule: always read from the primary.
PRIMARY_ONLY_APPS = frozenset({"auth", "contenttypes", "sessions", "admin", "axes", "django_otp", "otp_totp",
                               "otp_static", "django_celery_beat"})
READ_METHODS = ("GET", "HEAD")


class ReplicaRouter:
    """DATABASE_ROUTERS entry. With no replica configured, every answer is the primary."""

    def db_for_read(self, model, **hints):
        alias = _read_alias.get()
        if alias is None or model._meta.app_label in PRIMARY_ONLY_APPS or connections[DEFAULT_DB_ALIAS].in_atomic_block:
            return DEFAULT_DB_ALIAS
        return alias

    def db_for_write(self, model, **hints):
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1, obj2, **hints):
        # Physical replication: both aliases hold the same rows, so an object read from one may relate to the other's.
        return True

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == DEFAULT_DB_ALIAS  # the replica receives the schema through replication


def replica_alias() -> str:
    """The alias a read-only read should use now: the replica when usable, else the primary (also inside a
    transaction on the primary, whose uncommitted rows no replica has)."""
    if not replica.configured() or connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS
    return replica.REPLICA if replica.replica_status().usable else DEFAULT_DB_ALIAS


def current_read_alias() -> str:
    """Where the current page's reads go (the primary outside a replica-reads context)."""
    return _read_alias.get() or DEFAULT_DB_ALIAS


def with_replica_reads(request, view, *args, **kwargs):
    """Run `view(request, *args, **kwargs)` with its reads on the replica, for a GET or HEAD, when it is usable.

    The view must only read (a whitelisted page). Its TemplateResponse is rendered here, inside the context: the
    admin's changelist queries its rows while rendering. If the replica fails mid-page (it died, or a recovery
    conflict cancelled the query), the page runs again on the primary and the replica is skipped until its next
    check.
    """
    if request.method not in READ_METHODS:
        return view(request, *args, **kwargs)
    alias = replica_alias()
    if alias == DEFAULT_DB_ALIAS:
        return view(request, *args, **kwargs)
    token = _read_alias.set(alias)
    try:
        response = view(request, *args, **kwargs)
        if isinstance(response, SimpleTemplateResponse) and not response.is_rendered:
            response.render()
        return response
    except READ_ERRORS as exc:
        logger.warning("a read-only page failed on the database replica; reading the primary",
                       extra={"path": request.path, "error": str(exc).strip()[:200]})
        _failed_on(alias, exc, "mid-page")
    finally:
        _read_alias.reset(token)
    return view(request, *args, **kwargs)


def _failed_on(alias: str, exc: Exception, where: str) -> None:
    """A query failed on the replica: if the connection is broken (not a cancelled query), close it and skip the
    replica until its next check."""
    if connections[alias].connection is None or not connections[alias].is_usable():
        replica.mark_failed(f"failed {where}: {str(exc).strip()[:160]}")
        connections[alias].close()


def streamed_rows(queryset, *, chunk_size: int) -> Iterator:
    """The rows of a read-only queryset, for a response that streams them after the view returns (a CSV export):
    from the replica when it is usable, else from the primary.

    The query runs now, before the view returns, not when the response starts streaming: the first chunk is fetched
    here (in autocommit Django declares a WITH HOLD server-side cursor, whose DECLARE runs the whole query). So a
    replica that is down, hangs up or cancels the query makes the export read the primary, as a page would, and a
    primary that fails gives an error page, not a file. A replica failure after that, while the rows stream, is
    raised to whoever iterates (csv_response ends the file with an error line): rows are never repeated or silently
    dropped. A broken connection marks the replica failed first, so that exporting again reads the primary.
    """
    alias = replica_alias()
    if alias != DEFAULT_DB_ALIAS:
        try:
            return _marking_failure(alias, _run_now(queryset.using(alias), chunk_size))
        except READ_ERRORS as exc:
            logger.warning("an export's query failed on the database replica; reading the primary",
                           extra={"error": str(exc).strip()[:200]})
            _failed_on(alias, exc, "at an export's start")
    return _run_now(queryset.using(DEFAULT_DB_ALIAS), chunk_size)


def _run_now(queryset, chunk_size: int) -> Iterator:
    """The queryset's rows, its query run (and its first chunk fetched) now rather than at the first row read."""
    rows = queryset.iterator(chunk_size=chunk_size)
    return itertools.chain(list(itertools.islice(rows, 1)), rows)


def _marking_failure(alias: str, rows: Iterable) -> Iterator:
    try:
        yield from rows
    except READ_ERRORS as exc:
        logger.warning("an export failed on the database replica while streaming",
                       extra={"error": str(exc).strip()[:200]})
        _failed_on(alias, exc, "mid-export")
        raise


def replica_reads(view):
    """Decorator form of with_replica_reads for a view function (method_decorator for a method)."""

    @functools.wraps(view)
    def wrapped(request, *args, **kwargs):
        return with_replica_reads(request, view, *args, **kwargs)

    return wrapped


class ReplicaChangelistMixin:
    """A ModelAdmin whose changelist (GET) reads from the replica. Only for admins whose list nobody acts on
    without another look: the action itself (a POST) runs on the primary."""

    replica_changelist = True

    def changelist_view(self, request, extra_context=None):
        if not self.replica_changelist:
            return super().changelist_view(request, extra_context)
        return with_replica_reads(request, super().changelist_view, extra_context)
