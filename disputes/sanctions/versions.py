"""Sanctions list versions: importing one (refusals first, nothing written), re-screening every known wallet against
the entries it adds in one statement, flagging the wallets it no longer names, and the daily refresh."""
from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import actor_label, record_audit
from backoffice.permissions import require_perm

from ..models import BlacklistSource, SanctionsHit, SanctionsHitSource, SanctionsListVersion
from .hits import SCREENING_ACTOR, SCREENING_LOCK, Candidate, alert_hits, open_flags, record_sanctions_hits, rows
from .lists import MAX_BYTES, MAX_ERRORS_SHOWN, ListFormatError, ParsedList, parse_list
from .selectors import current_version_ids

logger = logging.getLogger(__name__)

REFRESH_ACTOR = "system:sanctions-refresh"
SHRINK_LIMIT = 0.2  # a new version may drop at most a fifth of the previous one's entries unless forced
DOWNLOAD_TIMEOUT = 120


def import_sanctions_list(*, actor: Any, data: bytes, source: str, asset: str | None = None, force: bool = False,
                          force_reason: str = "", published_at: datetime | None = None) -> SanctionsListVersion:
    """Import one file of a sanctions list as a new version, then screen every wallet we have ever seen against the
    entries it adds (one set operation in PostgreSQL) and handle the hits; flag for review the blacklisted wallets
    it no longer names. All in one transaction, audited; the P1 goes out after commit.

    Refused with a ValidationError naming the field, nothing written: a file that is not a sanctions list, the same
    file as the list's current version, and unless `force` (with a reason) addresses that are not EVM addresses
    (skipped when forced) or a version that drops more than a fifth of the previous one's entries.
    """
    require_perm(actor, "disputes.add_blacklist", "import sanctions lists")
    force_reason = (force_reason or "").strip()
    if force and not force_reason:
        raise ValidationError({"force_reason": "A forced import needs a reason: say why the refusal is wrong "
                                               "(e.g. 'OFAC removed 300 entries on 2026-12-01, see the notice')."})
    try:
        parsed = parse_list(data, name=source, asset=asset)
    except ListFormatError as exc:
        raise ValidationError({"file": str(exc)}) from None
    sha = hashlib.sha256(data).hexdigest()
    with transaction.atomic():
        with connection.cursor() as cur:  # one import of a list at a time: each compares with the one before
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"sanctions-list:{parsed.list_key}"])
            # No screening meanwhile (this waits for one under way): a wallet the sync meets after the re-screen
            # below has read the wallets is screened once this commits, against the new version too.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [SCREENING_LOCK])
        previous = (SanctionsListVersion.objects.filter(list_key=parsed.list_key).order_by("-imported_at", "-id")
                    .first())
        _refuse(parsed, previous, sha, source, force)
        version = SanctionsListVersion.objects.create(
            list_key=parsed.list_key, source=source[:2000], format=parsed.format,
            published_at=parsed.published_at or published_at, sha256=sha, entry_count=len(parsed.entries),
            previous=previous, notes=parsed.notes() + ([f"skipped (forced): {e}" for e in parsed.errors] if force
                                                        else []),
            forced=force, force_reason=force_reason if force else "",
            imported_by=actor if getattr(actor, "pk", None) else None,
            imported_by_label=actor_label(actor)[:150])
        _copy_entries(version, parsed)
        version.added_count, version.removed_count = _diff_counts(version)
        hits = rescreen_list_version(version, actor=actor)
        delisted = _flag_delisted(version, actor=actor)
        version.hit_count, version.rescreened_at = len(hits), timezone.now()
        version.save(update_fields=["added_count", "removed_count", "hit_count", "rescreened_at"])
        record_audit(actor=actor, action="import_sanctions_list", obj=version, reason=force_reason, after={
            "list": version.list_key, "source": version.source, "sha256": sha, "entries": version.entry_count,
            "added": version.added_count, "removed": version.removed_count, "published_at": version.published_at,
            "forced": force, "skipped": len(parsed.errors) if force else 0, "hits": [h.wallet for h in hits],
            "delisted_flagged": delisted})
        transaction.on_commit(lambda: alert_hits(hits, version=version))
    logger.info("sanctions list imported", extra={"list": version.list_key, "version": version.pk,
                                                  "entries": version.entry_count, "hits": len(hits)})
    return version


def _refuse(parsed: ParsedList, previous: SanctionsListVersion | None, sha: str, source: str, force: bool) -> None:
    if previous is not None and previous.sha256 == sha:
        raise ValidationError({"file": ValidationError(
            f"{source} is the same file as {previous.list_key} version #{previous.pk} (SHA-256 {sha[:12]}…, imported "
            f"{previous.imported_at:%Y-%m-%d %H:%M} UTC): nothing to import.", code="duplicate")})
    if force:
        return
    if parsed.errors:
        shown = parsed.errors[:MAX_ERRORS_SHOWN]
        more = len(parsed.errors) - len(shown)
        raise ValidationError({"file": [ValidationError(m, code="bad_addresses") for m in (
            *shown, *([f"… and {more} more."] if more else []),
            f"{len(parsed.errors)} listed value(s) are not EVM addresses: nothing was imported. Check the source; "
            "force the import (skipping them) with a reason if the list really holds them.")]})
    if previous is not None and len(parsed.entries) < (1 - SHRINK_LIMIT) * previous.entry_count:
        dropped = previous.entry_count - len(parsed.entries)
        raise ValidationError({"file": ValidationError(
            f"{source} holds {len(parsed.entries):,} addresses where {previous.list_key} version #{previous.pk} held "
            f"{previous.entry_count:,}: it drops {dropped:,}, more than a fifth (a truncated download?). Nothing was "
            "imported; check the file, and force the import with a reason if the list really shrank.",
            code="shrunk")})


def _copy_entries(version: SanctionsListVersion, parsed: ParsedList) -> None:
    with connection.cursor() as cur, cur.connection.cursor().copy(
            "COPY sanctions_entries (version_id, address, assets, sdn_uid, sdn_name) FROM STDIN") as copy:
        for entry in parsed.entries.values():
            copy.write_row((version.pk, entry.address, entry.assets, entry.sdn_uid, entry.sdn_name))


def _diff_counts(version: SanctionsListVersion) -> tuple[int, int]:
    (added, removed), = rows(
        "SELECT (SELECT count(*) FROM sanctions_entries n WHERE n.version_id = %(new)s AND NOT EXISTS ("
        "          SELECT 1 FROM sanctions_entries p WHERE p.version_id = %(prev)s AND p.address = n.address)), "
        "       (SELECT count(*) FROM sanctions_entries p WHERE p.version_id = %(prev)s AND NOT EXISTS ("
        "          SELECT 1 FROM sanctions_entries n WHERE n.version_id = %(new)s AND n.address = p.address))",
        {"new": version.pk, "prev": version.previous_id})
    return added, removed


# Every wallet we have ever seen (buyers and sellers in user_profiles, arbitrators) that the version adds, in one
# statement: an index probe of user_profiles' wallet index per added entry (a correlated LIMIT 1 subquery, which the
# planner cannot turn into a hash of the million profiles: that costs 3 to 7 times as much here) and a hash of the
# few arbitrators. It reads as many rows as the version adds, whatever the number of wallets we know.
RESCREEN_SQL = (
    "SELECT e.address, e.sdn_uid, e.sdn_name FROM sanctions_entries e "
    "WHERE e.version_id = %(new)s "
    "AND NOT EXISTS (SELECT 1 FROM sanctions_entries p WHERE p.version_id = %(prev)s AND p.address = e.address) "
    "AND (e.address IN (SELECT wallet FROM arbitrators) "
    "     OR (SELECT true FROM user_profiles u WHERE u.wallet = e.address LIMIT 1)) "
    "ORDER BY e.address")


def rescreen_list_version(version: SanctionsListVersion, *, actor: Any = SCREENING_ACTOR) -> list[SanctionsHit]:
    """Every wallet the marketplace has ever seen, screened against the entries `version` adds to its list (a set
    operation in PostgreSQL, not a loop over wallets), and the hits handled. Inside the caller's transaction."""
    found = rows(RESCREEN_SQL, {"new": version.pk, "prev": version.previous_id})
    return record_sanctions_hits([Candidate(wallet=w, source=SanctionsHitSource.LIST, version=version, sdn_uid=uid,
                                            sdn_name=name) for w, uid, name in found], actor=actor)


def _flag_delisted(version: SanctionsListVersion, *, actor: Any) -> list[str]:
    """Wallets blacklisted for sanctions (a "sanctions" entry, or the entry a hit kept) that this version drops and
    no current list names any more: a "delisted" review flag each (never a lift: staff decide, and the oracle may
    still name them)."""
    if version.previous_id is None:
        return []
    current = current_version_ids()
    dropped = rows(
        "SELECT p.address, b.id FROM sanctions_entries p "
        "JOIN blacklist b ON b.wallet = p.address AND b.lifted_at IS NULL AND (b.source = %(sanctions)s "
        "     OR EXISTS (SELECT 1 FROM sanctions_hits h WHERE h.blacklist_id = b.id)) "
        "WHERE p.version_id = %(prev)s "
        "AND NOT EXISTS (SELECT 1 FROM sanctions_entries c WHERE c.address = p.address "
        "                AND c.version_id = ANY(%(cur)s))",
        {"sanctions": BlacklistSource.SANCTIONS, "prev": version.previous_id, "cur": current})
    oracle_hits = dict(SanctionsHit.objects.filter(source=SanctionsHitSource.ORACLE, wallet__in=[r[0] for r in dropped])
                       .values_list("wallet", "chain"))
    reasons = {}
    for wallet, entry_id in dropped:
        still = (f" The {oracle_hits[wallet]} sanctions oracle named it too: check it before lifting."
                 if wallet in oracle_hits else "")
        reasons[wallet] = (f"Left sanctions list {version.list_key} in version #{version.pk} and no current list names "
                           f"it; it stays blacklisted (entry #{entry_id}) until staff lift it.{still}", 0)
    for flag in open_flags("delisted", reasons):
        record_audit(actor=actor, action="flag_for_review", obj=flag, after={"wallet": flag.wallet, "role": flag.role,
                                                                            "version": version.pk})
    return sorted(reasons)


def record_list_unchanged(*, version: SanctionsListVersion) -> None:
    """The source still serves this version's very file: the list is fresh (no new version, nothing to audit)."""
    SanctionsListVersion.objects.filter(pk=version.pk).update(last_seen_at=timezone.now())


@dataclass
class RefreshResult:
    imported: list[SanctionsListVersion] = field(default_factory=list)
    unchanged: list[SanctionsListVersion] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def refresh_sanctions_lists() -> RefreshResult:
    """Scheduled (daily): download each SANCTIONS_LIST_URL and import it when it changed. A download that fails is
    logged (the list-age rule pages if it goes on for 48 h); a refused import raises a P2, since only staff can
    decide to force it."""
    result = RefreshResult()
    for url in settings.SANCTIONS_LIST_URLS:
        try:
            data, published_at = download_list(url)
        except (requests.RequestException, ValueError) as exc:
            logger.error("sanctions list download failed: %s", exc, extra={"url": url})
            result.failed[url] = str(exc)
            continue
        sha = hashlib.sha256(data).hexdigest()
        latest = SanctionsListVersion.objects.filter(source=url).order_by("-imported_at", "-id").first()
        if latest is not None and latest.sha256 == sha:
            record_list_unchanged(version=latest)
            result.unchanged.append(latest)
            continue
        try:
            result.imported.append(import_sanctions_list(actor=REFRESH_ACTOR, data=data, source=url,
                                                         published_at=published_at))
        except ValidationError as exc:
            same = SanctionsListVersion.objects.filter(sha256=sha).order_by("-imported_at", "-id").first()
            if same is not None and any(e.code == "duplicate" for e in exc.error_dict.get("file", [])):
                record_list_unchanged(version=same)  # imported by hand from a file first: fresh all the same
                result.unchanged.append(same)
                continue
            message = " ".join(exc.messages)
            result.failed[url] = message
            raise_alert(key=f"sanctions-list-refused:{url}"[:200], severity="P2", source="refresh_sanctions_lists",
                        title="A sanctions list download was refused: the list is not refreshed",
                        message=f"{url}: {message} Import it by hand (Trust and safety → Sanctions → Import, or "
                                "manage.py import_sanctions_list) once checked.")
    return result


def download_list(url: str) -> tuple[bytes, datetime | None]:
    """The file at `url` (at most lists.MAX_BYTES) and its Last-Modified time, if the server says."""
    with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT, headers={"Accept-Encoding": "gzip"}) as response:
        response.raise_for_status()
        chunks, size = [], 0
        for chunk in response.iter_content(1 << 20):
            size += len(chunk)
            if size > MAX_BYTES:
                raise ValueError(f"{url} is over {MAX_BYTES // 2**20} MB: not a sanctions list")
            chunks.append(chunk)
        published = None
        with contextlib.suppress(TypeError, ValueError):
            published = parsedate_to_datetime(response.headers.get("Last-Modified", ""))
        return b"".join(chunks), published
