"""Screening the wallets the mirror meets: the queue a trigger fills, each wallet asked of its chain's sanctions oracle
(batched, at one block) and matched against every list's current version, the hits handled."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.locks import try_advisory_lock
from chain import sanctions as oracle
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError

from ..models import SanctionsEntry, SanctionsHit, SanctionsHitSource, SanctionsOracleCheck, SanctionsScreening
from .hits import SCREENING_LOCK, Candidate, alert_hits, record_sanctions_hits
from .selectors import current_version_ids

logger = logging.getLogger(__name__)

SCREEN_BATCH = 1000  # wallets per screening transaction (ten oracle requests)


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


def _screening_lock():
    """One screening at a time across workers, and none while a list version is imported (a session lock: a killed
    worker's dies with its connection)."""
    return try_advisory_lock(SCREENING_LOCK)


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
        # An oracle that answers again clears its P2 (resolved, sent to the channels that had it).
        settle_alerts(source="screen_new_wallets", scope=[f"sanctions-oracle:{chain}" for chain in answers],
                      raised=[])
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
