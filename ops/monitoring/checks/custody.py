"""The custody check: the Safe's owners, threshold, modules and guard against the last check and the configuration,
and closed SafeTxs that could still execute.

A custody change, or a module nobody declared, pages only once it held at a read and again at a read at least the
chain's confirmations later (seen once, it is a P3 observation); confirmed, it pauses the chain by itself where its
automatic pause is on. It runs every two minutes and as soon as the sync has applied new blocks.
"""
from __future__ import annotations

import logging
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.alerts.services import raise_alert, settle_alerts
from chain import transactions
from chain.config import configured_chains, get_chain_config
from chain.models import ChainState
from chain.rpc import ProviderUnavailable, RpcError
from chain.safe import SafeState
from ops.actions import autopause
from ops.actions.selectors import actions_made, custody_status, exposed_safe_txs, safe_tx_signers
from ops.models import AutoPauseTrigger

logger = logging.getLogger(__name__)

SOURCE = "check_custody"


def _snapshot(c) -> dict:
    return {"owner": c.owner, "pool_owner": c.pool_owner, "is_safe": c.is_safe,
            "owners": sorted(c.safe.owners) if c.safe else [], "threshold": c.safe.threshold if c.safe else None,
            "guardians": sorted(c.guardian.guardians) if c.guardian else [],
            "module_enabled": c.guardian.enabled if c.guardian else None,
            "modules": sorted(c.safe.modules) if c.safe else [], "guard": c.safe.guard if c.safe else None,
            "fallback_handler": c.safe.fallback_handler if c.safe else None}


def _twice(pending: dict | None, name: str, found: list[str], block: int, depth: int) -> tuple[str, dict, int | None]:
    """The two-observation rule for one finding: ("", …) when absent, ("observed", …) at first sight or until a
    read `depth` blocks later, then ("confirmed", …). Returns the verdict, the pending record and its first block."""
    record = dict(pending or {})
    if not found:
        record.pop(name, None)
        return "", record, None
    seen = record.get(name)
    if seen is None or seen.get("found") != found:
        record[name] = {"found": found, "block": block}
        return "observed", record, block
    return ("confirmed" if block >= seen["block"] + max(depth, 1) else "observed"), record, seen["block"]


def check_custody_of(chain: str) -> list[str]:
    """One chain: who owns the contracts, compared with the last check. A Safe's owners, threshold, guardians,
    modules, guard or fallback handler changed (the back office never changes them) is a P1 once confirmed, so is
    a module the back office does not know; a mismatch with the configuration is a P1 at every check; a relayer or
    keeper low on gas is a P2. Nothing is decided (or resolved) for a chain that could not be read."""
    cfg = get_chain_config(chain)
    try:
        block = transactions.head(chain)  # the custody read below is at this block or later
    except (ProviderUnavailable, RpcError):
        return []
    status = custody_status(chain)
    if status.error or status.custody is None:
        return []
    c, raised = status.custody, []
    snapshot = _snapshot(c)
    unknown = sorted(m for m in (c.safe.modules if c.safe else ()) if m != (cfg.guardian_module or "").lower()
                     and m not in cfg.safe_known_modules)
    with transaction.atomic():
        state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
        before = state.custody_snapshot
        # The first check records; a key the last snapshot did not hold yet (added since an upgrade) is no change;
        # neither is what the back office's own ownership transfer changed.
        ours = _transferred_by_back_office(chain, before or {}, snapshot, state.custody_checked_at)
        changes = [f"{k}: {before[k]} → {snapshot[k]}" for k in snapshot
                   if k in (before or {}) and before[k] != snapshot[k] and k not in ours]
        changed, pending, since = _twice(state.custody_pending, "changes", changes, block, cfg.confirmations)
        module, pending, module_since = _twice(pending, "unknown_modules", unknown, block, cfg.confirmations)
        if changed != "observed":  # no change, or a confirmed one: the baseline moves on
            state.custody_snapshot = snapshot
            pending.pop("changes", None)
        state.custody_pending, state.custody_checked_at = pending or None, timezone.now()
        state.save(update_fields=["custody_snapshot", "custody_pending", "custody_checked_at"])
        if changed == "confirmed":
            raise_alert(key=f"custody-changed:{chain}", severity="P1", source=SOURCE,
                        title=f"{chain}: contract custody changed outside the back office",
                        message="; ".join(changes) + f" (seen at block {since} and again at {block}). Check with "
                                "every Safe owner that this was intended.")
            raised.append(f"custody-changed:{chain}")
        elif changed == "observed":
            raise_alert(key=f"custody-observed:{chain}", severity="P3", source=SOURCE,
                        title=f"{chain}: contract custody read changed once",
                        message="; ".join(changes) + f" at block {since}. It pages (P1) if it still holds "
                                f"{cfg.confirmations} blocks later.")
            raised.append(f"custody-observed:{chain}")
        if c.errors:  # one alert naming every problem: one per problem under one key would keep only the last
            raise_alert(key=f"custody-mismatch:{chain}", severity="P1" if module != "observed" else "P3",
                        source=SOURCE, title=f"{chain}: custody does not match the configuration",
                        message=". ".join(c.errors) + ".")
            raised.append(f"custody-mismatch:{chain}")
        for gas in status.gas:
            if gas.low:
                raise_alert(key=f"gas-low:{chain}:{gas.role}", severity="P2", source=SOURCE,
                            title=f"{chain}: the {gas.role} is low on gas",
                            message=(f"{gas.address} holds {gas.balance} (minimum {cfg.min_gas_balance})"
                                     if gas.address else gas.error) + f": top it up, or {gas.role} transactions stop.")
                raised.append(f"gas-low:{chain}:{gas.role}")
        # A confirmed change stays firing until acknowledged: it was an event, not a condition that clears.
        settle_alerts(source=SOURCE, scope=[f"custody-observed:{chain}", f"custody-mismatch:{chain}",
                                            f"gas-low:{chain}"], raised=raised)
    if c.safe:
        raised += _closed_but_executable(chain, c.safe)
    if changed == "confirmed":
        autopause.auto_pause(chain=chain, trigger=AutoPauseTrigger.CUSTODY, evidence={
            "changes": "; ".join(changes), "first_block": since, "block": block})
    # Only a Safe-owned escrow should have modules: in eoa custody an unknown one is the mismatch above (the owner
    # is a contract), and the owner key could not pause through it anyway.
    if module == "confirmed" and cfg.is_safe:
        autopause.auto_pause(chain=chain, trigger=AutoPauseTrigger.UNKNOWN_MODULE, evidence={
            "modules": ", ".join(unknown), "first_block": module_since, "block": block})
    return raised


# Everything read from the escrow's owner: when the back office transferred the ownership, these follow from it.
OWNER_FIELDS = ("owner", "is_safe", "owners", "threshold", "guardians", "module_enabled", "modules", "guard",
                "fallback_handler")


def _transferred_by_back_office(chain: str, before: dict, snapshot: dict, since: datetime | None) -> set[str]:
    """The snapshot keys a transfer of ownership the back office signed, sent or confirmed explains (to the owner
    read now; counted as the settings watch counts its actions, `actions_made`): the escrow's owner
    and all read from it, the pool's owner. Those are no change outside the back office, nor a reason to pause."""
    moved = {kind for kind, key in (("transfer_ownership", "owner"), ("transfer_pool_ownership", "pool_owner"))
             if key in before and before[key] != snapshot[key]}
    if not moved:
        return set()
    done = {(kind, str(params.get("new_owner", "")).lower()) for kind, params in actions_made(chain, moved, since)}
    ours = set(OWNER_FIELDS) if ("transfer_ownership", str(snapshot["owner"]).lower()) in done else set()
    return ours | ({"pool_owner"} if ("transfer_pool_ownership", str(snapshot["pool_owner"]).lower()) in done
                   else set())


def check_custody() -> list[str]:
    """Every configured chain (beat, every two minutes)."""
    raised = []
    for chain in configured_chains():
        raised += check_custody_of(chain)
    return raised


def _closed_but_executable(chain: str, safe: SafeState) -> list[str]:
    """A P2, once per SafeTx, for a closed SafeTx (rejected, or failed without using its nonce) on the Safe's
    current nonce whose actions together hold the threshold of current owners' signatures: closing it in the back
    office did not void them (and the same SafeTx proposed, signed and rejected twice holds both halves), so
    whoever holds them can execute it until the nonce is used. Not while the same SafeTx is open again."""
    raised = []
    by_hash: dict[str, list] = {}
    closed = exposed_safe_txs().filter(chain=chain, safe_address=safe.address, safe_nonce=safe.nonce)
    for action in closed.order_by("pk"):
        by_hash.setdefault(action.signing_hash, []).append(action)
    for signing_hash, closed in by_hash.items():
        held = safe_tx_signers(signing_hash) & set(safe.owners)
        key = f"safe-tx-executable:{chain}:{signing_hash}"
        if len(held) < safe.threshold or Alert.objects.filter(key=key).exists():
            continue
        latest, names = closed[-1], ", ".join(f"#{a.pk}" for a in closed)
        then = ("Execute the action wanted on that nonce first, or its signers must accept that it uses the nonce up"
                if latest.kind == "cancel_safe_tx" else f"Open #{latest.pk} and use “Cancel on chain…”")
        raise_alert(key=key, severity="P2", source="check_custody",
                    title=f"{chain}: closed SafeTx {names} can still execute on chain",
                    message=f"{latest.description} on Safe nonce {safe.nonce}: {names} hold {len(held)} current "
                            "owners' "
                            f"signatures of {safe.threshold} needed, and whoever holds them can execute it. {then}.")
        raised.append(key)
    return raised
