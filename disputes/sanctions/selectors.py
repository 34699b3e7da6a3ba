"""Sanctions screening reads: the current list versions, a version's report, a wallet's hits, and the figures the
Sanctions page, the dashboard tile and /metrics show. Each is a few index lookups, whatever the mirror's size."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from chain.models import Arbitrator

from ..models import (
    SanctionsEntry,
    SanctionsHit,
    SanctionsListVersion,
    SanctionsOracleCheck,
    SanctionsScreening,
)

PENDING_COUNT_CAP = 100_000  # the queue is counted up to this (a rollout queues every known wallet at once)


def current_version_ids() -> list[int]:
    """The newest version of each list: together, what "the current list" is."""
    with connection.cursor() as cur:
        cur.execute(CURRENT_SQL)
        return [row[0] for row in cur.fetchall()]


CURRENT_SQL = ("SELECT DISTINCT ON (list_key) id FROM sanctions_list_versions "
               "ORDER BY list_key, imported_at DESC, id DESC")


def current_versions() -> list[SanctionsListVersion]:
    return list(SanctionsListVersion.objects.filter(pk__in=RawSQL(CURRENT_SQL, [])).order_by("list_key"))


def current_entries_naming(wallet: str) -> list[SanctionsEntry]:
    """The current lists' entries that name `wallet` (lower-case), with their version."""
    return list(SanctionsEntry.objects.filter(version_id__in=RawSQL(CURRENT_SQL, []), address=wallet.lower())
                .select_related("version").order_by("version__list_key"))


def unhandled_hits():
    """Hits whose review flag nobody has resolved yet."""
    return SanctionsHit.objects.filter(Q(flag__isnull=True) | Q(flag__resolved_at__isnull=True))


@dataclass(frozen=True)
class ScreeningState:
    pending: int  # wallets waiting to be screened, counted up to PENDING_COUNT_CAP
    pending_oldest: datetime | None  # when the oldest of them was queued
    unhandled_hits: int

    @property
    def pending_capped(self) -> bool:
        return self.pending >= PENDING_COUNT_CAP


def screening_state() -> ScreeningState:
    """The queue and the hits nobody handled yet, in one statement (the oldest-first partial index, a hits scan)."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), min(queued_at), (SELECT count(*) FROM sanctions_hits h "
            "   LEFT JOIN dispute_review_flags f ON f.id = h.flag_id WHERE f.resolved_at IS NULL) "
            "FROM (SELECT queued_at FROM sanctions_screenings WHERE screened_at IS NULL ORDER BY queued_at "
            "      LIMIT %s) AS p", [PENDING_COUNT_CAP])
        pending, oldest, unhandled = cur.fetchone()
    return ScreeningState(pending, oldest, unhandled)


def refresh_age_seconds(now: datetime | None = None) -> float | None:
    """Seconds since the least recently refreshed SANCTIONS_LIST_URL last served a good file (imported, or the same
    as its current version); a URL with no version of its own (its file was first imported by hand) counts as old as
    the stalest current list; +inf while no list exists at all; None when no URL is configured (refresh off)."""
    urls = settings.SANCTIONS_LIST_URLS
    if not urls:
        return None
    now = now or timezone.now()
    seen = {}
    for source, last in (SanctionsListVersion.objects.filter(source__in=urls).order_by()
                         .values_list("source", "last_seen_at")):
        seen[source] = max(seen.get(source, last), last)
    if any(url not in seen for url in urls):
        age, _ = list_age(now)
        if age is None:
            return float("inf")
        seen[""] = now - timedelta(seconds=age)
    return max(0.0, (now - min(seen.values())).total_seconds())


def list_age(now: datetime | None = None) -> tuple[float | None, SanctionsListVersion | None]:
    """Seconds since the current lists were last confirmed (the newest fetch of the stalest list), and that version;
    (None, None) before any list is imported."""
    versions = current_versions()
    if not versions:
        return None, None
    now = now or timezone.now()
    stalest = min(versions, key=lambda v: v.last_seen_at)
    return max(0.0, (now - stalest.last_seen_at).total_seconds()), stalest


def oracle_checks() -> list[dict]:
    """Per configured chain: its oracle and the last answer (or error) it gave."""
    from chain.config import get_chain_config

    checks = {c.chain: c for c in SanctionsOracleCheck.objects.all()}
    out = []
    for chain in settings.CHAINS:
        cfg = get_chain_config(chain)
        out.append({"chain": chain, "name": cfg.name, "oracle": cfg.sanctions_oracle, "check": checks.get(chain)})
    return out


def hits_for_wallets(wallets: list[str]) -> dict[str, list[SanctionsHit]]:
    """Each wallet's hits, newest first, with their evidence and who handled them."""
    wallets = [w for w in wallets if w]
    out: dict[str, list[SanctionsHit]] = {}
    for hit in (SanctionsHit.objects.filter(wallet__in=wallets).select_related("version", "flag__resolved_by",
                                                                               "blacklist")):
        out.setdefault(hit.wallet, []).append(hit)
    return out


def wallet_screening(wallet: str) -> SanctionsScreening | None:
    return SanctionsScreening.objects.filter(wallet=wallet).first()


def sanctioned_arbitrator_wallets() -> set[str]:
    """Arbitrators named by a sanctions hit (the arbitrator monitoring page flags them), whatever the wallet was to us
    when hit: a trader hit first who registers as an arbitrator later is not hit again, and is one all the same."""
    return set(SanctionsHit.objects.filter(wallet__in=Arbitrator.objects.values("wallet"))
               .values_list("wallet", flat=True))


@dataclass
class VersionReport:
    version: SanctionsListVersion
    added: list[SanctionsEntry]
    removed: list[SanctionsEntry]
    hits: list[SanctionsHit]
    open_orders: int
    escrowed: dict[str, Decimal]
    shown: int


def version_report(version: SanctionsListVersion, *, shown: int = 200) -> VersionReport:
    """What a version changed (the first `shown` entries added and removed), the wallets of ours it hit with their
    orders, the open orders and escrowed value touched, and who handled each hit."""
    added = list(SanctionsEntry.objects.filter(version=version).exclude(
        address__in=SanctionsEntry.objects.filter(version_id=version.previous_id).values("address"))
        .order_by("address")[:shown]) if version.added_count else []
    removed = list(SanctionsEntry.objects.filter(version_id=version.previous_id).exclude(
        address__in=SanctionsEntry.objects.filter(version=version).values("address"))
        .order_by("address")[:shown]) if version.removed_count and version.previous_id else []
    hits = list(version.hits.select_related("flag__resolved_by", "blacklist").prefetch_related("orders")
                .order_by("wallet"))
    escrowed: dict[str, Decimal] = {}
    for hit in hits:
        for symbol, amount in hit.escrowed.items():
            escrowed[symbol] = escrowed.get(symbol, Decimal(0)) + Decimal(amount)
    return VersionReport(version=version, added=added, removed=removed, hits=hits,
                         open_orders=sum(h.open_orders for h in hits), escrowed=escrowed, shown=shown)
