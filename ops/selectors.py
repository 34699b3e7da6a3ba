"""Reads for the operations pages: custody (who owns the contracts, who may sign), an action's signatures, and
the age of the last good backup and restore test."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from backoffice.durations import age, human_duration
from chain import safe as chain_safe
from chain import transactions
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError

from .custody import current_signers, signature_problems
from .models import (
    AWAITING,
    IN_FLIGHT,
    ActionSignature,
    ActionStatus,
    BackupRun,
    BackupStatus,
    ContractAction,
    Custody,
    RestoreTest,
    RestoreTestStatus,
    StaffSigningKey,
)

WEI = Decimal(10**18)


@dataclass
class GasAccount:
    role: str
    address: str
    balance: Decimal | None  # native coin
    low: bool
    error: str = ""


@dataclass
class CustodyStatus:
    chain: str
    mode: str
    custody: chain_safe.Custody | None = None
    gas: list[GasAccount] = field(default_factory=list)
    error: str = ""
    owner_names: dict[str, str] = field(default_factory=dict)  # address → staff username


def gas_accounts(chain: str) -> list[GasAccount]:
    """The relayer's and keeper's (and in eoa mode the owner's) gas balances against the chain's minimum."""
    cfg = get_chain_config(chain)
    minimum = Decimal(cfg.min_gas_balance)
    roles = ["relayer", "keeper"] if cfg.is_safe else ["owner", "keeper"]
    out = []
    for role in roles:
        if not transactions.has_key(role):
            out.append(GasAccount(role, "", None, True, f"no {role} key configured"))
            continue
        try:
            address = transactions.signer_address(role)
            balance = Decimal(transactions.balance_of(chain, address)) / WEI
            out.append(GasAccount(role, address, balance, balance < minimum))
        except transactions.SignerUnavailable as exc:
            out.append(GasAccount(role, "", None, True, str(exc)))
        except (ProviderUnavailable, RpcError) as exc:
            out.append(GasAccount(role, "", None, False, f"RPC unreachable: {exc}"))
    return out


def custody_status(chain: str) -> CustodyStatus:
    cfg = get_chain_config(chain)
    status = CustodyStatus(chain=chain, mode=cfg.owner_mode)
    if not cfg.is_configured:
        status.error = "not configured"
        return status
    try:
        status.custody = chain_safe.read_custody(chain, escrow=cfg.escrow, pool=cfg.arbitrator_pool,
                                                 guardian_module=cfg.guardian_module,
                                                 known_modules=cfg.safe_known_modules)
    except (ProviderUnavailable, RpcError) as exc:
        status.error = f"RPC unreachable: {exc}"
        return status
    if cfg.is_safe and not status.custody.is_safe:
        status.custody.errors.append(f"owner mode is safe but the owner {status.custody.owner} is a plain account")
    if not cfg.is_safe and status.custody.is_safe:
        status.custody.errors.append("owner mode is eoa but the owner is a contract (a Safe?): set the owner mode "
                                     "to safe")
    addresses = list(status.custody.safe.owners if status.custody.safe else ())
    if status.custody.guardian:
        addresses += list(status.custody.guardian.guardians)
    status.owner_names = dict(StaffSigningKey.objects.filter(address__in=addresses, revoked_at__isnull=True)
                              .values_list("address", "user__username"))
    status.gas = gas_accounts(chain)
    return status


def exposed_safe_txs() -> QuerySet[ContractAction]:
    """Closed SafeTxs whose owners' signatures still execute them on chain while their Safe nonce is unused:
    rejected, or failed without using the nonce (a reverted execTransaction even publishes the signatures); a
    cancel too (it uses the nonce up, under whatever waits on it). Not a SafeTx open again under another action
    (proposed anew: wanted)."""
    open_again = ContractAction.objects.filter(custody=Custody.SAFE, signing_hash=OuterRef("signing_hash"),
                                               status__in=[*AWAITING, *IN_FLIGHT])
    return (ContractAction.objects.filter(custody=Custody.SAFE, status__in=[ActionStatus.REJECTED, ActionStatus.FAILED])
            .exclude(Exists(open_again)))


def safe_tx_signers(signing_hash: str) -> set[str]:
    """Every address that signed this SafeTx under any action (a rejected SafeTx proposed again is signed again:
    on chain, the signatures of all of them add up)."""
    return set(ActionSignature.objects.filter(action__custody=Custody.SAFE, action__signing_hash=signing_hash)
               .values_list("signer_address", flat=True))


def large_order_rule() -> tuple[str, list]:
    """The alert table's large-order rule ("a single order over 5,000 USDT") as a condition on `orders` and its
    parameters: over LARGE_ORDER_USDT, in a USD stablecoin (USD_STABLECOINS), the only tokens whose amount is a
    dollar amount. The check and the /metrics gauge both use it, so they agree."""
    from django.conf import settings

    from .models import PlatformFlag

    limit = Decimal(str(PlatformFlag.get("LARGE_ORDER_USDT", 5000)))
    return "amount > %s AND upper(token_symbol) = ANY(%s)", [limit, settings.USD_STABLECOINS]


def safe_tx_cancels(action: ContractAction) -> list[ContractAction]:
    """The cancels proposed on the same Safe nonce as `action`, newest first."""
    return list(ContractAction.objects.filter(kind="cancel_safe_tx", chain=action.chain, safe_address=action.safe_address,
                                              safe_nonce=action.safe_nonce).exclude(pk=action.pk).order_by("-pk"))


def signing_summary(action: ContractAction) -> dict[str, Any]:
    """What a signer needs to see: the SafeTx (or pause) in words, who signed, and what the chain says now."""
    summary: dict[str, Any] = {"custody": action.custody, "safe": action.safe_address, "nonce": action.safe_nonce,
                               "hash": action.signing_hash, "typed_data": action.typed_data, "error": "",
                               "typed_id": f"typed-{action.pk}"}
    try:
        signers = current_signers(action)
        summary.update(owners=signers.addresses, threshold=signers.threshold, chain_nonce=signers.nonce,
                       stale=signers.nonce > (action.safe_nonce or 0))
    except (ProviderUnavailable, RpcError) as exc:
        signers = None
        summary["error"] = f"could not read the {'module' if action.custody == Custody.GUARDIAN else 'Safe'}: {exc}"
    rows = []
    sigs = list(action.signatures.select_related("signed_by"))
    problems = signature_problems(action, sigs, signers.addresses if signers else None)
    for sig in sigs:
        rows.append({"address": sig.signer_address, "user": sig.signed_by.get_username(), "source": sig.get_source_display(),
                     "at": sig.created_at, "valid": sig.pk not in problems, "why": problems.get(sig.pk, "")})
    summary["signatures"] = rows
    summary["valid_count"] = sum(1 for r in rows if r["valid"])
    # A rejected SafeTx is void only in the back office: on chain, its current owners' signatures (a revoked key
    # signs on chain all the same) execute it until its nonce is used. `executable`: enough of them are held.
    closed = bool(signers and signers.nonce == action.safe_nonce and exposed_safe_txs().filter(pk=action.pk).exists())
    held = safe_tx_signers(action.signing_hash) & set(signers.addresses) if closed else set()
    summary["onchain_count"] = len(held)  # of current owners, over every action of this SafeTx
    summary["exposed"] = bool(held)
    summary["executable"] = summary["exposed"] and len(held) >= signers.threshold
    if summary["exposed"]:
        summary["cancels"] = safe_tx_cancels(action)
    return summary


# ---------------------------------------------------------------------------------------------- backups

# The alert rules' thresholds (ops/prometheus/alerts.yml): a daily backup, a weekly restore test, each with slack.
BACKUP_MAX_AGE = timedelta(hours=26)
RESTORE_TEST_MAX_AGE = timedelta(days=8)


@dataclass
class BackupHealth:
    last_backup: BackupRun | None
    last_restore_test: RestoreTest | None
    backup_age: timedelta | None
    restore_test_age: timedelta | None

    @property
    def backup_stale(self) -> bool:
        return self.backup_age is None or self.backup_age > BACKUP_MAX_AGE

    @property
    def restore_test_stale(self) -> bool:
        return self.restore_test_age is None or self.restore_test_age > RESTORE_TEST_MAX_AGE


def backup_health(now: datetime | None = None) -> BackupHealth:
    """The last good backup and the last passed restore test, with their ages (two index-free reads of small tables)."""
    now = now or timezone.now()
    backup = BackupRun.objects.filter(status=BackupStatus.OK).order_by("-finished_at").first()
    test = (RestoreTest.objects.filter(status=RestoreTestStatus.PASSED).select_related("backup")
            .order_by("-finished_at").first())
    return BackupHealth(backup, test, age(backup.finished_at, now) if backup else None,
                        age(test.finished_at, now) if test else None)


def age_text(elapsed: timedelta | None) -> str:
    """'12 min ago' / '5 h 3 min ago' / '3 d 2 h ago' / 'never'."""
    return "never" if elapsed is None else f"{human_duration(elapsed.total_seconds())} ago"


# ---------------------------------------------------------------------------------------------- RB-02


# RB-02 step 3's connections, on this database: idle for longer than %s seconds, never the asking connection.
IDLE_LONG = ("datname = current_database() AND state = 'idle' AND state_change < clock_timestamp() - "
             "make_interval(secs => %s) AND pid <> pg_backend_pid()")


@dataclass(frozen=True)
class DatabaseActivity:
    by_state: list[tuple[str, int]]      # RB-02 step 1: connections by state
    running: list[dict[str, Any]]        # step 2: the ten longest non-idle queries
    idle_long: list[dict[str, Any]]      # step 3: what "end idle connections" would end
    max_connections: int


def database_activity(*, idle_seconds: int = 600) -> DatabaseActivity:
    """The runbook's RB-02 queries on this back office's own database (never another's), this page's own
    connection left out."""
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT COALESCE(state, 'background'), count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() GROUP BY 1 ORDER BY 2 DESC")
        by_state = cur.fetchall()
        cur.execute("SELECT pid, EXTRACT(EPOCH FROM clock_timestamp() - query_start), state, left(query, 120), "
                    "application_name, wait_event_type FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle' "
                    "AND pid <> pg_backend_pid() ORDER BY query_start LIMIT 10")
        running = [dict(zip(("pid", "seconds", "state", "query", "application", "waiting_on"), row))
                   for row in cur.fetchall()]
        cur.execute("SELECT pid, EXTRACT(EPOCH FROM clock_timestamp() - state_change), application_name, "
                    f"client_addr::text FROM pg_stat_activity WHERE {IDLE_LONG} ORDER BY state_change", [idle_seconds])
        idle_long = [dict(zip(("pid", "seconds", "application", "client"), row)) for row in cur.fetchall()]
        cur.execute("SELECT current_setting('max_connections')::int")
        (max_connections,) = cur.fetchone()
    return DatabaseActivity(by_state, running, idle_long, max_connections)
