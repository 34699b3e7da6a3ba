"""What a sanctions hit does, for a list version and a first screening alike: a hit row (one per wallet and version,
or wallet and oracle chain), the wallet blacklisted with source "sanctions" and its evidence (or the active entry it
had kept, its expiry dropped), each open order and dispute it was party to recorded, an open "sanctions" review flag
(resolving it is "handled"), audit rows, and a P1 after commit. All in bulk: a few statements whatever the number of
hits."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit
from chain.models import OPEN_STATUSES

from ..models import Blacklist, BlacklistSource, ReviewFlag, SanctionsHit, SanctionsHitSource, SanctionsListVersion

SCREENING_ACTOR = "system:sanctions-screening"
# Held by a screening run (session) and by a list import (its transaction): a wallet met while a version is imported
# is screened after it commits, against the new version, rather than against the old one behind the re-screen's back.
SCREENING_LOCK = "sanctions-screening"


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


def rows(sql: str, params: list | dict) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def record_sanctions_hits(candidates: list[Candidate], *, actor: Any = SCREENING_ACTOR) -> list[SanctionsHit]:
    """Handle hits in bulk, inside the caller's transaction: a hit row each (one per wallet and version, or wallet
    and oracle chain: a hit already recorded is not recorded again), the blacklist entry (or the active one the
    wallet already has, made never to expire), its open orders and disputes, and an open "sanctions" review flag.
    Audited per entry, hit and flag. Returns the new hits; the caller raises the alert after commit (`alert_hits`)."""
    if not candidates:
        return []
    if not connection.in_atomic_block:
        raise RuntimeError("record_sanctions_hits must run inside the caller's transaction.atomic block")
    inserted = rows(
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
    new_entries = dict(rows(
        "INSERT INTO blacklist (wallet, reason, source, created_at) "
        "SELECT w, r, %s, now() FROM unnest(%s::text[], %s::text[]) AS t(w, r) "
        "WHERE NOT EXISTS (SELECT 1 FROM blacklist b WHERE b.wallet = t.w AND b.lifted_at IS NULL) "
        "ON CONFLICT DO NOTHING RETURNING wallet, id",
        [BlacklistSource.SANCTIONS, wallets, [reasons[w] for w in wallets]]))
    # An entry the wallet already had (a temporary ban from before) stands for the hit now: it no longer expires, or
    # the expiry job would lift a sanctioned wallet by itself. The old expiry is kept in the audit row.
    unexpired = dict(rows(
        "UPDATE blacklist b SET expires_at = NULL FROM blacklist old WHERE old.id = b.id AND b.wallet = ANY(%s) "
        "AND b.lifted_at IS NULL AND b.expires_at IS NOT NULL RETURNING b.id, old.expires_at", [wallets]))

    # Each open order and dispute the wallet is party to, as it stands now (three index scans).
    for column, role in (("buyer_wallet", "buyer"), ("seller_wallet", "seller"), ("arbitrator_wallet", "arbitrator")):
        rows(
            "INSERT INTO sanctions_hit_orders (hit_id, chain, onchain_id, role, status, amount, token_symbol) "
            f"SELECT h.id, o.chain, o.onchain_id, %s, o.status, o.amount, o.token_symbol FROM sanctions_hits h "
            f"JOIN orders o ON o.{column} = h.wallet WHERE h.id = ANY(%s) AND o.status = ANY(%s) "
            "ON CONFLICT DO NOTHING", [role, hit_ids, list(OPEN_STATUSES)])
    rows(
        "UPDATE sanctions_hits h SET open_orders = s.n, escrowed = s.e FROM ("
        "  SELECT hit_id, sum(n)::int AS n, jsonb_object_agg(token_symbol, total::text) AS e FROM ("
        "    SELECT hit_id, token_symbol, count(*) AS n, sum(amount) AS total FROM ("
        "      SELECT DISTINCT ON (hit_id, chain, onchain_id) hit_id, token_symbol, amount FROM sanctions_hit_orders "
        "      WHERE hit_id = ANY(%s) ORDER BY hit_id, chain, onchain_id) AS one_per_order "
        "    GROUP BY hit_id, token_symbol) AS per_token GROUP BY hit_id) AS s WHERE h.id = s.hit_id", [hit_ids])
    rows(
        "UPDATE sanctions_hits h SET roles = array_remove(ARRAY["
        "  CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.buyer_wallet = h.wallet) THEN 'buyer' END,"
        "  CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.seller_wallet = h.wallet) THEN 'seller' END,"
        "  CASE WHEN EXISTS (SELECT 1 FROM arbitrators a WHERE a.wallet = h.wallet) THEN 'arbitrator' END"
        "]::varchar[], NULL) WHERE h.id = ANY(%s)", [hit_ids])

    # The review flag staff resolve when they have handled it (one open per wallet: a second hit joins it).
    hits = SanctionsHit.objects.in_bulk(hit_ids)
    disputes = dict(rows("SELECT h.wallet, count(DISTINCT (o.chain, o.onchain_id)) FROM sanctions_hit_orders o "
                          "JOIN sanctions_hits h ON h.id = o.hit_id WHERE o.hit_id = ANY(%s) AND o.status = 'disputed' "
                          "GROUP BY h.wallet", [hit_ids]))
    new_flags = open_flags("sanctions", {
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
    for entry in Blacklist.objects.filter(pk__in=unexpired).order_by("pk"):
        record_audit(actor=actor, action="keep_blacklist_entry", obj=entry, before={"expires_at": unexpired[entry.pk]},
                     after={"expires_at": None}, reason=reasons[entry.wallet])
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


def open_flags(role: str, reasons: dict[str, tuple[str, int]]) -> list[ReviewFlag]:
    """Open a review flag of `role` for each wallet that has no open one; returns the new flags."""
    if not reasons:
        return []
    wallets = sorted(reasons)
    ids = [row[0] for row in rows(
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
