"""Trust and safety writes: blacklisting and lifting. Each writes its audit row in the same transaction."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from chain.addresses import canonical_wallet
from chain.models import Order
from ops.actions.services import propose_contract_action

from .models import REASON_MAX_LENGTH, Blacklist, BlacklistSource, DisputeCase, DisputeNote, Recommendation, ReviewFlag
from .sanctions.hits import SCREENING_LOCK
from .sanctions.selectors import current_entries_naming


def _snapshot(entry: Blacklist) -> dict[str, Any]:
    return {
        "wallet": entry.wallet,
        "reason": entry.reason,
        "source": entry.source,
        "expires_at": entry.expires_at,
        "order_id": entry.order_id,
        "lifted_at": entry.lifted_at,
        "lift_reason": entry.lift_reason,
    }


def blacklist_wallet(*, actor: Any, wallet: str, reason: str, source: str = BlacklistSource.MANUAL,
                     expires_at: datetime | None = None, order: Order | None = None) -> Blacklist:
    """Blacklist one wallet. Raises ValidationError naming the field on bad input or a duplicate.

    Side effects: user_profiles.is_blacklisted becomes true (database trigger); one audit row.
    """
    require_perm(actor, "disputes.add_blacklist", "blacklist wallets")
    wallet = canonical_wallet(wallet)
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required: say why this wallet is blacklisted."})
    if len(reason) > REASON_MAX_LENGTH:
        raise ValidationError({"reason": f"The reason is {len(reason):,} characters long: shorten it to at most "
                                         f"{REASON_MAX_LENGTH:,}."})
    if source not in BlacklistSource.values:
        raise ValidationError({"source": f"Unknown source {source!r}: use one of {', '.join(BlacklistSource.values)}."})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "The expiry is in the past: leave it empty or pick a future time (UTC)."})
    try:
        with transaction.atomic():
            entry = Blacklist.objects.create(wallet=wallet, reason=reason, source=source, expires_at=expires_at,
                                             order=order, created_by=actor if getattr(actor, "pk", None) else None)
            record_audit(actor=actor, action="blacklist_wallet", obj=entry, after=_snapshot(entry), reason=reason)
    except IntegrityError as exc:
        if "blacklist_one_active_per_wallet" in str(exc):
            raise ValidationError(
                {"wallet": f"{wallet} is already blacklisted: lift the active entry first."}) from None
        raise
    return entry


def lift_blacklist_entry(*, actor: Any, entry: Blacklist, reason: str) -> Blacklist:
    """Lift an active blacklisting (the row stays, as history). Raises ValidationError if already lifted, or while
    a current sanctions list names the wallet (whatever the entry's own source: a hit keeps the entry it finds)."""
    require_perm(actor, "disputes.change_blacklist", "lift blacklistings")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to lift a blacklisting."})
    with transaction.atomic():
        # Not while a list version is imported or wallets screened (both hold this lock): a hit deciding to keep
        # this entry must not see it active and then find it lifted. Taken before the row lock, as they take it.
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s))", [SCREENING_LOCK])
        entry = Blacklist.objects.select_for_update().get(pk=entry.pk)
        if entry.lifted_at is not None:
            raise ValidationError(
                {"wallet": f"{entry.wallet} was already lifted at {entry.lifted_at:%Y-%m-%d %H:%M} UTC."})
        if listed := current_entries_naming(entry.wallet):
            names = "; ".join(f"{e.version.list_key} version #{e.version_id}, {e.sdn_name or 'no SDN name'}"
                              for e in listed)
            raise ValidationError({"wallet": f"{entry.wallet} is named by the current sanctions list ({names}): it "
                                             "stays blacklisted while a list names it. When a new version drops it, a "
                                             "'delisted' review flag asks you to lift it."})
        before = _snapshot(entry)
        entry.lifted_at = timezone.now()
        entry.lifted_by = actor if getattr(actor, "pk", None) else None
        entry.lift_reason = reason
        entry.save(update_fields=["lifted_at", "lifted_by", "lift_reason"])
        record_audit(actor=actor, action="lift_blacklist_entry", obj=entry, before=before, after=_snapshot(entry),
                     reason=reason)
    return entry


# ---------------------------------------------------------------------------- dispute review


def _case(order: Order) -> DisputeCase:
    """The order's case, with the order row locked and its status read fresh (the sync may have moved it)."""
    order = Order.objects.select_for_update().get(pk=order.pk)
    if order.status != "disputed":
        raise ValidationError({"order": f"Order {order} is {order.get_status_display().lower()}, not disputed."})
    case, _ = DisputeCase.objects.select_for_update().get_or_create(order=order)
    return case


def claim_dispute(*, actor: Any, order: Order) -> DisputeCase:
    """Take a disputed order for review. Refused when someone else holds it (release it first)."""
    require_perm(actor, "disputes.review_dispute", "review disputes")
    with transaction.atomic():
        case = _case(order)
        if case.assignee_id and case.assignee_id != actor.pk:
            raise ValidationError({"assignee": f"{case.assignee} has claimed this dispute: ask them to release it."})
        case.assignee, case.claimed_at = actor, timezone.now()
        case.save(update_fields=["assignee", "claimed_at"])
        record_audit(actor=actor, action="claim_dispute", obj=case, after={"assignee": actor.get_username()})
    return case


def release_dispute(*, actor: Any, order: Order) -> DisputeCase:
    require_perm(actor, "disputes.review_dispute", "review disputes")
    with transaction.atomic():
        case = _case(order)
        if case.assignee_id is None:
            raise ValidationError({"assignee": "Nobody holds this dispute."})
        if case.assignee_id != actor.pk and not actor.is_superuser:
            raise ValidationError({"assignee": f"Only {case.assignee} (or a superuser) can release this dispute."})
        before = {"assignee": case.assignee.get_username()}
        case.assignee, case.claimed_at = None, None
        case.save(update_fields=["assignee", "claimed_at"])
        record_audit(actor=actor, action="release_dispute", obj=case, before=before, after={"assignee": None})
    return case


def add_dispute_note(*, actor: Any, order: Order, body: str) -> DisputeNote:
    """Append an internal note (notes are never edited or deleted)."""
    require_perm(actor, "disputes.review_dispute", "review disputes")
    body = (body or "").strip()
    if not body:
        raise ValidationError({"body": "The note is empty: write what you found."})
    if len(body) > 5000:
        raise ValidationError({"body": "The note is over 5,000 characters: shorten it or split it."})
    with transaction.atomic():
        case = _case(order)
        note = DisputeNote.objects.create(case=case, author=actor, body=body)
        record_audit(actor=actor, action="add_dispute_note", obj=case, after={"note_id": note.pk, "body": body})
    return note


def recommend_resolution(*, actor: Any, order: Order, recommendation: str, note: str) -> DisputeCase:
    require_perm(actor, "disputes.review_dispute", "review disputes")
    if recommendation not in Recommendation.values:
        raise ValidationError({"recommendation": f"Choose one of: {', '.join(Recommendation.labels)}."})
    note = (note or "").strip()
    if not note:
        raise ValidationError({"note": "Say why: a recommendation needs a short justification."})
    with transaction.atomic():
        case = _case(order)
        before = {"recommendation": case.recommendation, "note": case.recommendation_note}
        case.recommendation, case.recommendation_note = recommendation, note
        case.recommended_by, case.recommended_at = actor, timezone.now()
        case.save(update_fields=["recommendation", "recommendation_note", "recommended_by", "recommended_at"])
        record_audit(actor=actor, action="recommend_resolution", obj=case, before=before,
                     after={"recommendation": recommendation, "note": note}, reason=note)
    return case


def propose_owner_resolution(*, actor: Any, order: Order, favor_buyer: bool, reason: str):
    """'Resolve for buyer/seller' when the arbitrator missed the dispute deadline: proposes the owner's
    ownerResolveDispute as a contract action, which a different person must approve."""
    # The role is checked first, so a reviewer is refused as such whatever the order's state.
    require_perm(actor, "ops.add_contractaction", "propose contract actions")
    if order.status != "disputed":
        raise ValidationError({"order": f"Order {order} is not disputed."})
    if order.dispute_deadline is None or order.dispute_deadline > timezone.now():
        raise ValidationError({"order": "The arbitrator's deadline has not passed: the owner may only step in "
                                        "after it (the contract refuses earlier)."})
    return propose_contract_action(actor=actor, chain=order.chain, kind="owner_resolve",
                                   params={"order_id": order.onchain_id, "favor_buyer": favor_buyer},
                                   reason=reason)


def blacklist_wallets(*, actor: Any, wallets: list[str], reason: str, source: str = BlacklistSource.MANUAL,
                      order: Order | None = None) -> list[Blacklist]:
    """Blacklist several wallets at once (RB-04 reports). All or nothing; each one is audited."""
    require_perm(actor, "disputes.add_blacklist", "blacklist wallets")
    with transaction.atomic():
        return [blacklist_wallet(actor=actor, wallet=w, reason=reason, source=source, order=order) for w in wallets]


def lift_expired_blacklist_entries(*, now=None) -> int:
    """Scheduled: lift every active entry whose expiry has passed (audited as the system)."""
    now = now or timezone.now()
    lifted = 0
    for entry in Blacklist.objects.active().filter(expires_at__lte=now).order_by("expires_at"):
        try:
            lift_blacklist_entry(actor="system:blacklist-expiry", entry=entry,
                                 reason=f"expired at {entry.expires_at:%Y-%m-%d %H:%M} UTC")
            lifted += 1
        except ValidationError:
            continue  # lifted meanwhile
    return lifted


def flag_repeat_offenders(*, days: int = 7, minimum: int = 3) -> int:
    """Scheduled: flag repeat offenders (sellers and buyers) for review. Never blacklists anyone."""
    from .selectors import repeat_offenders

    flagged = 0
    for role in ("seller", "buyer"):
        for row in repeat_offenders(role, days=days, minimum=minimum, limit=50):
            if not row["is_blacklisted"]:
                flagged += _flag_for_review(
                    wallet=row["wallet"], role=role, actor="system:repeat-offenders", disputes=row["disputes"],
                    reason=f"{row['disputes']} open disputes as {role} in {days} days (RB-04)",
                    noted={"disputes": row["disputes"]})
    return flagged


def _flag_for_review(*, wallet: str, role: str, reason: str, actor: str, noted: dict, disputes: int = 0) -> bool:
    """One open review flag per wallet and role; a new one is audited (with `noted`). True when it is new."""
    with transaction.atomic():
        flag, created = ReviewFlag.objects.get_or_create(wallet=wallet, role=role, resolved_at__isnull=True,
                                                         defaults={"reason": reason, "disputes": disputes})
        if created:
            record_audit(actor=actor, action="flag_for_review", obj=flag,
                         after={"wallet": flag.wallet, "role": role, **noted})
    return created


def flag_fast_order_makers(*, hours: int = 2, minimum: int = 11) -> int:
    """Scheduled: flag for review the wallets that created more than ten orders in two hours (runbook 002). Never
    blacklists anyone; one open flag per wallet."""
    from .selectors import fast_order_makers

    flagged = 0
    for row in fast_order_makers(hours=hours, minimum=minimum):
        if not row["is_blacklisted"]:
            flagged += _flag_for_review(
                wallet=row["wallet"], role="velocity", actor="system:order-velocity", noted={"orders": row["orders"]},
                reason=f"{row['orders']} orders created in {hours} h (runbook 002: more than {minimum - 1} in "
                       f"{hours} h is high-risk order volume)")
    return flagged


def resolve_review_flag(*, actor: Any, flag: ReviewFlag, resolution: str) -> ReviewFlag:
    require_perm(actor, "disputes.review_dispute", "resolve review flags")
    resolution = (resolution or "").strip()
    if not resolution:
        raise ValidationError({"resolution": "Say what you decided (e.g. 'blacklisted', 'legitimate seller')."})
    with transaction.atomic():
        flag = ReviewFlag.objects.select_for_update().get(pk=flag.pk)
        if flag.resolved_at:
            raise ValidationError({"resolution": "This flag is already resolved."})
        flag.resolved_at, flag.resolved_by, flag.resolution = timezone.now(), actor, resolution
        flag.save(update_fields=["resolved_at", "resolved_by", "resolution"])
        record_audit(actor=actor, action="resolve_review_flag", obj=flag, after={"resolution": resolution})
    return flag


def dispute_rate_threshold() -> int:
    """The RB-04 threshold (percent) from the platform settings; 20 when unset (0 is a valid setting)."""
    from ops.models import PlatformFlag

    return PlatformFlag.get("DISPUTE_RATE_ALERT_PCT", 20)


def check_dispute_rate() -> bool:
    """Scheduled: alert (P2, fraud) when the 24 h dispute rate passes the threshold (default 20%)."""
    from backoffice.alerts.services import raise_alert, settle_alerts

    from .selectors import dispute_rate_24h

    threshold = dispute_rate_threshold()
    rate = dispute_rate_24h(threshold)
    if rate.over_threshold:
        raise_alert(key="dispute-rate-24h", severity="P2", source="check_dispute_rate",
                    title=f"High dispute rate: {rate.pct}% of {rate.total_orders} orders in 24 h "
                          f"(threshold {threshold}%)",
                    message="RB-04: see Trust and safety → RB-04 report for repeat offenders and new accounts.")
    settle_alerts(source="check_dispute_rate", scope=["dispute-rate-24h"],
                  raised=["dispute-rate-24h"] if rate.over_threshold else [])
    return rate.over_threshold


def import_blacklist(*, actor: Any, data: bytes | str) -> list[Blacklist]:
    """Import a validated CSV: every row or none (a bad row raises ValidationError listing every problem)."""
    from .imports import parse_blacklist_csv

    require_perm(actor, "disputes.add_blacklist", "import blacklists")
    parsed = parse_blacklist_csv(data)
    if not parsed.ok:
        raise ValidationError({"file": parsed.errors})
    with transaction.atomic():
        return [blacklist_wallet(actor=actor, wallet=r.wallet, reason=r.reason, source=r.source,
                                 expires_at=r.expires_at) for r in parsed.rows]
