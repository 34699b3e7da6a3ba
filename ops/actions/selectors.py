"""Reads for the owner-action pages: custody (who owns the contracts, who may sign, the gas accounts), an action's
signatures, and the closed SafeTxs whose signatures could still execute them on chain.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from chain import safe as chain_safe
from chain import transactions
from chain.config import get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import AWAITING, IN_FLIGHT, ActionSignature, ActionStatus, ContractAction, Custody, StaffSigningKey

from . import counting

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


def safe_tx_cancels(action: ContractAction) -> list[ContractAction]:
    """The cancels proposed on the same Safe nonce as `action`, newest first."""
    return list(ContractAction.objects.filter(kind="cancel_safe_tx", chain=action.chain,
                                              safe_address=action.safe_address, safe_nonce=action.safe_nonce)
                .exclude(pk=action.pk).order_by("-pk"))


def safe_tx_check(action: ContractAction) -> dict[str, Any]:
    """What a Safe owner compares with the hardware wallet before signing: the SafeTx's ten fields in the Safe's
    order, the domain separator, the message hash and the safeTxHash, and a `cast` line that recomputes the three
    from the fields alone. Empty for anything but a SafeTx (a guardian pause is not one)."""
    if action.custody != Custody.SAFE or not action.typed_data:
        return {"safe_tx_fields": [], "hashes": None, "cast_command": ""}
    message = action.typed_data["message"]
    return {"safe_tx_fields": [(f["name"], message[f["name"]]) for f in chain_safe.SAFE_TX_FIELDS],
            "hashes": chain_safe.safe_tx_hashes(action.typed_data).as_dict(),
            "cast_command": chain_safe.safe_tx_cast_command(action.typed_data)}


def signing_summary(action: ContractAction) -> dict[str, Any]:
    """What a signer needs to see: the SafeTx (or pause) in words, who signed, and what the chain says now."""
    summary: dict[str, Any] = {"custody": action.custody, "safe": action.safe_address, "nonce": action.safe_nonce,
                               "hash": action.signing_hash, "typed_data": action.typed_data, "error": "",
                               "typed_id": f"typed-{action.pk}"}
    summary.update(safe_tx_check(action))
    try:
        signers = counting.current_signers(action)
        summary.update(owners=signers.addresses, threshold=signers.threshold, chain_nonce=signers.nonce,
                       stale=signers.nonce > (action.safe_nonce or 0))
    except (ProviderUnavailable, RpcError) as exc:
        signers = None
        summary["error"] = f"could not read the {'module' if action.custody == Custody.GUARDIAN else 'Safe'}: {exc}"
    rows = []
    sigs = list(action.signatures.select_related("signed_by"))
    problems = counting.signature_problems(action, sigs, signers.addresses if signers else None)
    for sig in sigs:
        rows.append({"address": sig.signer_address, "user": sig.signed_by.get_username(),
                     "source": sig.get_source_display(), "at": sig.created_at, "valid": sig.pk not in problems,
                     "why": problems.get(sig.pk, "")})
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


def _units(row: dict[str, Any]) -> str:
    value = Decimal(int(row["delta"])).scaleb(-int(row.get("decimals", 18))).normalize()
    return ("+" if value > 0 else "") + f"{value:f}"


def present_effects(effects_: dict[str, Any] | None) -> dict[str, Any] | None:
    """A recorded simulation for the pages: balance changes in token units besides the raw ones."""
    if not effects_:
        return None
    shown = dict(effects_)
    shown["balances"] = [{**row, "delta_units": _units(row)} for row in effects_.get("balances") or []]
    return shown


def effects_summary(action: ContractAction) -> dict[str, Any]:
    """The action's recorded state changes: at proposal, before sending (and how they differed), and the check of
    what happened after execution."""
    return {"proposal": present_effects(action.proposal_effects), "sending": present_effects(action.execution_effects),
            "differences": action.effects_differences, "acknowledged_by": action.effects_acknowledged_by,
            "check": action.get_effect_check_display() if action.effect_check else "",
            "check_key": action.effect_check, "check_differences": action.effect_check_differences,
            "observed": present_effects(action.observed_effects)}


def paused_by_back_office(chain: str) -> str:
    """The back office's own pause that explains paused(): its last pause sent (mined or about to be confirmed),
    newer than its last unpause. Then paused() is no surprise (that pause paged for itself if it was automatic)."""
    last = (ContractAction.objects.filter(chain=chain, kind__in=["pause", "unpause"],
                                          status__in=[ActionStatus.SENT, ActionStatus.CONFIRMED])
            .order_by("-sent_at").first())
    return f"paused by contract action #{last.pk}" if last is not None and last.kind == "pause" else ""


def actions_made(chain: str, kinds: Iterable[str], since: datetime | None) -> list[tuple[str, dict]]:
    """(kind, params) of the owner actions of `kinds` the back office signed, sent or confirmed on `chain`, for the
    watches that tell its own changes from others': those sent since a day before `since` (the watch's last check:
    one may have waited in the mempool across it), and those signed and not recorded as sent yet (a broadcast that
    raised after the node took it, or an owner who sent the signed SafeTx himself)."""
    made = ContractAction.objects.filter(chain=chain, kind__in=kinds, status__in=[
        ActionStatus.SIGNED, ActionStatus.SENT, ActionStatus.CONFIRMED])
    if since is not None:
        made = made.filter(Q(sent_at__gte=since - timedelta(days=1)) | Q(status=ActionStatus.SIGNED))
    return list(made.values_list("kind", "params"))
