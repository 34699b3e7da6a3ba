"""Sanctions screening writes: importing a list version (and re-screening every known wallet against its new
entries), screening the wallets the mirror meets, and what a hit does. Each writes its audit rows in its own
transaction; alerts go out after commit.

A hit blacklists the wallet with source "sanctions" (the list version, or the oracle and its block, as evidence),
records each open order and dispute it was party to, opens a "sanctions" review flag (staff resolve it to say it is
handled) and raises a P1. A wallet that leaves every list is never lifted by itself: a "delisted" review flag asks
staff to lift it.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import time
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
from chain import sanctions as oracle
from chain.config import get_chain_config
from chain.models import OPEN_STATUSES
from chain.rpc import ProviderUnavailable, RpcError

from ..models import (
    Blacklist,
    BlacklistSource,
    ReviewFlag,
    SanctionsEntry,
    SanctionsHit,
    SanctionsHitSource,
    SanctionsListVersion,
    SanctionsOracleCheck,
    SanctionsScreening,
)
from .lists import MAX_BYTES, MAX_ERRORS_SHOWN, ListFormatError, ParsedList, parse_list
from .selectors import current_version_ids

logger = logging.getLogger(__name__)

SCREENING_ACTOR = "system:sanctions-screening"
REFRESH_ACTOR = "system:sanctions-refresh"
SHRINK_LIMIT = 0.2  # a new version may drop at most a fifth of the previous one's entries unless forced
SCREEN_BATCH = 1000  # wallets per screening transaction (ten oracle requests)
DOWNLOAD_TIMEOUT = 120


@dataclass
class Candidate:
    """A wallet of ours that a list version or an oracle names."""

    wallet: str
    source: str
    version: SanctionsListVersion | None = None
    chain: str | None = None
    oracle: str | None = None
    block: int | None = None
    sdn_uid: int | None = None
    sdn_name: str = ""

    @property
    def evidence(self) -> str:
        if self.source == SanctionsHitSource.LIST:
            named = f", SDN {self.sdn_uid} {self.sdn_name}".rstrip() if self.sdn_uid else ""
            return (f"sanctions list {self.version.list_key} version #{self.version.pk} (SHA-256 "
                    f"{self.version.sha256[:12]}…{named})")
        return f"sanctions oracle {self.oracle} on {self.chain} at block {self.block}"


# ---------------------------------------------------------------------------- hits


def _rows(sql: str, params: list | dict) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def record_sanctions_hits(candidates: list[Candidate], *, actor: Any = SCREENING_ACTOR) -> list[SanctionsHit]:
    """Handle hits in bulk, inside the caller's transaction: a hit row each (one per wallet and version, or wallet
    and oracle chain: a hit already recorded is not recorded again), the blacklist entry (or the active one the
    wallet already has), its open orders and disputes, and an open "sanctions" review flag. Audited per entry, hit
    and flag. Returns the new hits; the caller raises the alert after commit (`alert_hits`)."""
    if not candidates:
        return []
    if not connection.in_atomic_block:
        raise RuntimeError("record_sanctions_hits must run inside the caller's transaction.atomic block")
    inserted = _rows(
        "INSERT INTO sanctions_hits (wallet, source, version_id, chain, oracle, block, sdn_uid, sdn_name, roles, "
        "detected_at, open_orders, escrowed) "
        "SELECT w, s, v, c, o, b, u, n, '{}', now(), 0, '{}' FROM unnest(%s::text[], %s::text[], %s::bigint[], "
        "%s::text[], %s::text[], %s::bigint[], %s::bigint[], %s::text[]) AS t(w, s, v, c, o, b, u, n) "
        "ON CONFLICT DO NOTHING RETURNING id, wallet",
        [[c.wallet for c in candidates], [c.source for c in candidates],
         [c.version.pk if c.version else None for c in candidates], [c.chain or "" for c in candidates],
         [c.oracle for c in candidates], [c.block for c in candidates], [c.sdn_uid for c in candidates],
         [c.sdn_name for c in candidates]])
    if not inserted:
        return []
    hit_ids = [row[0] for row in inserted]
    by_wallet = {c.wallet: c for c in candidates}
    wallets = sorted({row[1] for row in inserted})

    # The blacklist: a new entry for each wallet without an active one (the unique index settles a race).
    reasons = {w: f"Sanctions: named by {by_wallet[w].evidence}." for w in wallets}
    new_entries = dict(_rows(
        "INSERT INTO blacklist (wallet, reason, source, created_at) "
        "SELECT w, r, %s, now() FROM unnest(%s::text[], %s::text[]) AS t(w, r) "
        "WHERE NOT EXISTS (SELECT 1 FROM blacklist b WHERE b.wallet = t.w AND b.lifted_at IS NULL) "
        "ON CONFLICT DO NOTHING RETURNING wallet, id",
        [BlacklistSource.SANCTIONS, wallets, [reasons[w] for w in wallets]]))

    # Each open order and dispute the wallet is party to, as it stands now (three index scans).
    for column, role in (("buyer_wallet", "buyer"), ("seller_wallet", "seller"), ("arbitrator_wallet", "arbitrator")):
        _rows(
            "INSERT INTO sanctions_hit_orders (hit_id, chain, onchain_id, role, status, amount, token_symbol) "
            f"SELECT h.id, o.chain, o.onchain_id, %s, o.status, o.amount, o.token_symbol FROM sanctions_hits h "
            f"JOIN orders o ON o.{column} = h.wallet WHERE h.id = ANY(%s) AND o.status = ANY(%s) "
            "ON CONFLICT DO NOTHING", [role, hit_ids, list(OPEN_STATUSES)])
    _rows(
        "UPDATE sanctions_hits h SET open_orders = s.n, escrowed = s.e FROM ("
        "  SELECT hit_id, sum(n)::int AS n, jsonb_object_agg(token_symbol, total::text) AS e FROM ("
        "    SELECT hit_id, token_symbol, count(*) AS n, sum(amount) AS total FROM ("
        "      SELECT DISTINCT ON (hit_id, chain, onchain_id) hit_id, token_symbol, amount FROM sanctions_hit_orders "
        "      WHERE hit_id = ANY(%s) ORDER BY hit_id, chain, onchain_id) AS one_per_order "
        "    GROUP BY hit_id, token_symbol) AS per_token GROUP BY hit_id) AS s WHERE h.id = s.hit_id", [hit_ids])
    _rows(
        "UPDATE sanctions_hits h SET roles = array_remove(ARRAY["
        "  CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.buyer_wallet = h.wallet) THEN 'buyer' END,"
        "  CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.seller_wallet = h.wallet) THEN 'seller' END,"
        "  CASE WHEN EXISTS (SELECT 1 FROM arbitrators a WHERE a.wallet = h.wallet) THEN 'arbitrator' END"
        "]::varchar[], NULL) WHERE h.id = ANY(%s)", [hit_ids])

    # The review flag staff resolve when they have handled it (one open per wallet: a second hit joins it).
    hits = SanctionsHit.objects.in_bulk(hit_ids)
    disputes = dict(_rows("SELECT h.wallet, count(DISTINCT (o.chain, o.onchain_id)) FROM sanctions_hit_orders o "
                          "JOIN sanctions_hits h ON h.id = o.hit_id WHERE o.hit_id = ANY(%s) AND o.status = 'disputed' "
                          "GROUP BY h.wallet", [hit_ids]))
    new_flags = _open_flags("sanctions", {
        w: (f"Sanctions hit: {by_wallet[w].evidence}. Blacklisted; check its open orders and disputes, then mark "
            "this flag reviewed with what was done.", disputes.get(w, 0)) for w in wallets})
    flag_ids = dict(ReviewFlag.objects.filter(role="sanctions", resolved_at__isnull=True, wallet__in=wallets)
                    .values_list("wallet", "id"))
    entry_ids = dict(Blacklist.objects.active().filter(wallet__in=wallets).values_list("wallet", "id"))
    for hit in hits.values():
        hit.blacklist_id, hit.flag_id = entry_ids.get(hit.wallet), flag_ids.get(hit.wallet)
    SanctionsHit.objects.bulk_update(hits.values(), ["blacklist", "flag"])

    for entry in Blacklist.objects.filter(pk__in=new_entries.values()).order_by("pk"):
        record_audit(actor=actor, action="blacklist_wallet", obj=entry, reason=entry.reason,
                     after={"wallet": entry.wallet, "reason": entry.reason, "source": entry.source})
    for flag in new_flags:
        record_audit(actor=actor, action="flag_for_review", obj=flag,
                     after={"wallet": flag.wallet, "role": flag.role, "disputes": flag.disputes})
    out = sorted(SanctionsHit.objects.filter(pk__in=hit_ids).select_related("version"), key=lambda h: h.pk)
    for hit in out:
        record_audit(actor=actor, action="record_sanctions_hit", obj=hit, after={
            "wallet": hit.wallet, "evidence": hit.evidence, "blacklist_id": hit.blacklist_id,
            "new_blacklist_entry": hit.wallet in new_entries, "flag_id": hit.flag_id, "roles": hit.roles,
            "open_orders": hit.open_orders, "escrowed": hit.escrowed})
    return out


def _open_flags(role: str, reasons: dict[str, tuple[str, int]]) -> list[ReviewFlag]:
    """Open a review flag of `role` for each wallet that has no open one; returns the new flags."""
    if not reasons:
        return []
    wallets = sorted(reasons)
    ids = [row[0] for row in _rows(
        "INSERT INTO dispute_review_flags (wallet, role, reason, disputes, created_at, resolution) "
        "SELECT w, %s, r, d, now(), '' FROM unnest(%s::text[], %s::text[], %s::int[]) AS t(w, r, d) "
        "ON CONFLICT (wallet, role) WHERE resolved_at IS NULL DO NOTHING RETURNING id",
        [role, wallets, [reasons[w][0] for w in wallets], [reasons[w][1] for w in wallets]])]
    return list(ReviewFlag.objects.filter(pk__in=ids).order_by("pk"))


def alert_hits(hits: list[SanctionsHit], *, version: SanctionsListVersion | None = None) -> None:
    """The P1 for new hits (call after commit): one per list version, else one per wallet."""
    if not hits:
        return
    orders = sum(h.open_orders for h in hits)
    if version is not None:
        listed = ", ".join(h.wallet for h in hits[:5]) + (f" and {len(hits) - 5} more" if len(hits) > 5 else "")
        raise_alert(key=f"sanctions-list:{version.pk}", severity="P1", source="sanctions",
                    title=f"Sanctions list {version.list_key} version #{version.pk} names {len(hits)} of our "
                          f"wallet(s); {orders} open order(s) flagged",
                    message=f"Blacklisted (source sanctions): {listed}. Trust and safety → Sanctions → version "
                            f"#{version.pk}: review each hit's orders and resolve its review flag.")
        return
    for hit in hits:
        raise_alert(key=f"sanctions-hit:{hit.wallet}", severity="P1", source="sanctions",
                    title=f"Sanctioned wallet {hit.wallet} ({', '.join(hit.roles) or 'new'}): blacklisted, "
                          f"{hit.open_orders} open order(s) flagged",
                    message=f"Named by {hit.evidence}. Trust and safety → Sanctions hits: review its orders and "
                            "resolve its review flag.")


# ---------------------------------------------------------------------------- list versions


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
    (added, removed), = _rows(
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
    rows = _rows(RESCREEN_SQL, {"new": version.pk, "prev": version.previous_id})
    return record_sanctions_hits([Candidate(wallet=w, source=SanctionsHitSource.LIST, version=version, sdn_uid=uid,
                                            sdn_name=name) for w, uid, name in rows], actor=actor)


def _flag_delisted(version: SanctionsListVersion, *, actor: Any) -> list[str]:
    """Wallets blacklisted for sanctions that this version drops and no current list names any more: a "delisted"
    review flag each (never a lift: staff decide, and the oracle may still name them)."""
    if version.previous_id is None:
        return []
    current = current_version_ids()
    rows = _rows(
        "SELECT p.address, b.id FROM sanctions_entries p "
        "JOIN blacklist b ON b.wallet = p.address AND b.lifted_at IS NULL AND b.source = %(sanctions)s "
        "WHERE p.version_id = %(prev)s "
        "AND NOT EXISTS (SELECT 1 FROM sanctions_entries c WHERE c.address = p.address "
        "                AND c.version_id = ANY(%(cur)s))",
        {"sanctions": BlacklistSource.SANCTIONS, "prev": version.previous_id, "cur": current})
    oracle_hits = dict(SanctionsHit.objects.filter(source=SanctionsHitSource.ORACLE, wallet__in=[r[0] for r in rows])
                       .values_list("wallet", "chain"))
    reasons = {}
    for wallet, entry_id in rows:
        still = (f" The {oracle_hits[wallet]} sanctions oracle named it too: check it before lifting."
                 if wallet in oracle_hits else "")
        reasons[wallet] = (f"Left sanctions list {version.list_key} in version #{version.pk} and no current list names "
                           f"it; it stays blacklisted (entry #{entry_id}) until staff lift it.{still}", 0)
    for flag in _open_flags("delisted", reasons):
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


# ---------------------------------------------------------------------------- wallets first seen


@dataclass
class ScreenResult:
    screened: int = 0
    hits: list[SanctionsHit] = field(default_factory=list)
    oracle_requests: int = 0
    failed_chains: dict[str, str] = field(default_factory=dict)
    skipped: str = ""


def _oracle_chain(chain: str, oracles: dict[str, str]) -> str | None:
    """The chain whose oracle screens a wallet first seen on `chain`: its own, else the first chain with one (the
    Chainalysis oracle lists the same addresses on every chain)."""
    if chain in oracles:
        return chain
    return next(iter(oracles), None)


def _configured_oracles() -> dict[str, str]:
    out = {}
    for chain in settings.CHAINS:
        cfg = get_chain_config(chain)
        if cfg.sanctions_oracle and cfg.rpc_url:
            out[chain] = cfg.sanctions_oracle
    return out


@contextlib.contextmanager
def _screening_lock():
    """One screening at a time across workers (a session lock: a killed worker's dies with its connection)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(hashtext('sanctions-screening'))")
        got = cur.fetchone()[0]
    try:
        yield got
    finally:
        if got:
            with contextlib.suppress(Exception), connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(hashtext('sanctions-screening'))")


def screen_new_wallets(*, batch: int = SCREEN_BATCH, max_seconds: float = 20.0) -> ScreenResult:
    """Screen the wallets the mirror met and nobody screened yet, oldest first, `batch` per transaction: against
    every list's current version (a join) and the oracle of the chain each was first seen on (one batched request
    per 100 wallets). Hits are handled as a list version's are, a P1 each after commit. A wallet whose oracle cannot
    be asked stays queued (its list check is done meanwhile) and the chain's error is kept for the Sanctions page.
    Safe to run twice at once: the second returns skipped."""
    result = ScreenResult()
    with _screening_lock() as got:
        if not got:
            result.skipped = "locked"
            return result
        deadline = time.monotonic() + max_seconds
        oracles = _configured_oracles()
        while time.monotonic() < deadline:
            pending = list(SanctionsScreening.objects.pending().order_by("queued_at", "id")
                           .values_list("wallet", "chain")[:batch])
            if not pending:
                break
            _screen_batch(pending, oracles, result)
            if result.failed_chains:
                break  # an oracle failed: its wallets wait for the next run rather than asking it again now
    return result


def _screen_batch(pending: list[tuple[str, str]], oracles: dict[str, str], result: ScreenResult) -> None:
    """One transaction: the oracle answers first (outside it), then the lists, the hits and the marks."""
    chain_of = {wallet: _oracle_chain(chain, oracles) for wallet, chain in pending}
    answers: dict[str, oracle.OracleAnswer] = {}
    for chain in sorted({c for c in chain_of.values() if c is not None}):
        try:
            answers[chain] = oracle.check_wallets(chain, [w for w, c in chain_of.items() if c == chain])
            result.oracle_requests += answers[chain].requests
        except (oracle.OracleError, RpcError, ProviderUnavailable) as exc:
            result.failed_chains[chain] = str(exc)
            _record_oracle_error(chain, oracles[chain], str(exc))
    wallets = list(chain_of)
    # Screened: those whose oracle answered (or that no oracle can be asked about); the others stay queued.
    screened = [w for w in wallets if chain_of[w] is None or chain_of[w] in answers]
    with transaction.atomic():
        listed: dict[str, SanctionsEntry] = {}
        for entry in (SanctionsEntry.objects.filter(version_id__in=current_version_ids(), address__in=wallets)
                      .select_related("version").order_by("address", "-version__imported_at")):
            listed.setdefault(entry.address, entry)
        candidates = [Candidate(wallet=w, source=SanctionsHitSource.LIST, version=e.version, sdn_uid=e.sdn_uid,
                                sdn_name=e.sdn_name) for w, e in listed.items()]
        for answer in answers.values():
            candidates += [Candidate(wallet=w, source=SanctionsHitSource.ORACLE, chain=answer.chain,
                                     oracle=answer.oracle, block=answer.block)
                           for w in sorted(answer.listed) if w not in listed]
        hits = record_sanctions_hits(candidates)
        now, named = timezone.now(), {c.wallet for c in candidates}
        for chain in {chain_of[w] for w in screened}:
            answer = answers.get(chain)
            these = [w for w in screened if chain_of[w] == chain]
            SanctionsScreening.objects.filter(wallet__in=these).update(
                screened_at=now, oracle_chain=chain or "", oracle_block=answer.block if answer else None,
                listed=False)
        SanctionsScreening.objects.filter(wallet__in=[w for w in screened if w in named]).update(listed=True)
        for answer in answers.values():
            _record_oracle_answer(answer)
        transaction.on_commit(lambda: alert_hits(hits))
    result.screened += len(screened)
    result.hits += hits


def _record_oracle_answer(answer: oracle.OracleAnswer) -> None:
    check, _ = SanctionsOracleCheck.objects.select_for_update().get_or_create(
        chain=answer.chain, defaults={"oracle": answer.oracle})
    check.oracle, check.last_checked_at, check.last_block = answer.oracle, answer.at, answer.block
    check.wallets_checked += len(answer.checked)
    check.requests += answer.requests
    check.last_error = ""
    check.save()


def _record_oracle_error(chain: str, address: str, message: str) -> None:
    """Kept for the Sanctions page (its own small transaction) and a P2: the chain's new wallets wait unscreened."""
    with transaction.atomic():
        check, _ = SanctionsOracleCheck.objects.select_for_update().get_or_create(chain=chain,
                                                                                   defaults={"oracle": address})
        check.oracle, check.last_error, check.last_error_at = address, message[:2000], timezone.now()
        check.save(update_fields=["oracle", "last_error", "last_error_at"])
    logger.error("sanctions oracle failed on %s: %s", chain, message, extra={"chain": chain})
    raise_alert(key=f"sanctions-oracle:{chain}", severity="P2", source="screen_new_wallets",
                title=f"The sanctions oracle on {chain} does not answer: its new wallets wait unscreened",
                message=message)
