"""The custody check: the Safe's owners, threshold, modules and guard against the configuration, and closed SafeTxs
that could still execute.
"""
from __future__ import annotations

import logging

from django.db import transaction
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.alerts.services import raise_alert
from chain.config import configured_chains, get_chain_config
from chain.models import ChainState
from chain.safe import SafeState
from ops.actions.selectors import custody_status, exposed_safe_txs, safe_tx_signers

logger = logging.getLogger(__name__)


def check_custody() -> list[str]:
    """Who owns the contracts, compared with the last check: a Safe's owners, threshold, guardians, modules, guard
    or fallback handler changed (the back office never changes them) or a new owner is a P1; so is, at every
    check, a module or guard the back office does not know; a relayer or keeper low on gas is a P2."""
    raised = []
    for chain in configured_chains():
        status = custody_status(chain)
        if status.error or status.custody is None:
            continue
        c = status.custody
        snapshot = {"owner": c.owner, "pool_owner": c.pool_owner, "is_safe": c.is_safe,
                    "owners": sorted(c.safe.owners) if c.safe else [], "threshold": c.safe.threshold if c.safe else None,
                    "guardians": sorted(c.guardian.guardians) if c.guardian else [],
                    "module_enabled": c.guardian.enabled if c.guardian else None,
                    "modules": sorted(c.safe.modules) if c.safe else [], "guard": c.safe.guard if c.safe else None,
                    "fallback_handler": c.safe.fallback_handler if c.safe else None}
        with transaction.atomic():
            state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
            before, state.custody_snapshot, state.custody_checked_at = state.custody_snapshot, snapshot, timezone.now()
            state.save(update_fields=["custody_snapshot", "custody_checked_at"])
        # The first check records; a key the last snapshot did not hold yet (added since an upgrade) is no change.
        changes = [f"{k}: {before[k]} → {snapshot[k]}" for k in snapshot if k in (before or {}) and before[k] != snapshot[k]]
        if changes:
            raise_alert(key=f"custody-changed:{chain}", severity="P1", source="check_custody",
                        title=f"{chain}: contract custody changed outside the back office",
                        message="; ".join(changes) + ". Check with every Safe owner that this was intended.")
            raised.append(f"custody-changed:{chain}")
        if c.safe:
            raised += _closed_but_executable(chain, c.safe)
        if c.errors:  # one alert naming every problem: one per problem under one key would keep only the last
            raise_alert(key=f"custody-mismatch:{chain}", severity="P1", source="check_custody",
                        title=f"{chain}: custody does not match the configuration", message=". ".join(c.errors) + ".")
            raised.append(f"custody-mismatch:{chain}")
        for gas in status.gas:
            if gas.low:
                raise_alert(key=f"gas-low:{chain}:{gas.role}", severity="P2", source="check_custody",
                            title=f"{chain}: the {gas.role} is low on gas",
                            message=(f"{gas.address} holds {gas.balance} (minimum {get_chain_config(chain).min_gas_balance})"
                                     if gas.address else gas.error) + f": top it up, or {gas.role} transactions stop.")
                raised.append(f"gas-low:{chain}:{gas.role}")
    return raised


def _closed_but_executable(chain: str, safe: SafeState) -> list[str]:
    """A P2, once per SafeTx, for a closed SafeTx (rejected, or failed without using its nonce) on the Safe's
    current nonce whose actions together hold the threshold of current owners' signatures: closing it in the back
    office did not void them (and the same SafeTx proposed, signed and rejected twice holds both halves), so
    whoever holds them can execute it until the nonce is used. Not while the same SafeTx is open again."""
    raised = []
    by_hash: dict[str, list] = {}
    for action in exposed_safe_txs().filter(chain=chain, safe_address=safe.address, safe_nonce=safe.nonce).order_by("pk"):
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
                    message=f"{latest.description} on Safe nonce {safe.nonce}: {names} hold {len(held)} current owners' "
                            f"signatures of {safe.threshold} needed, and whoever holds them can execute it. {then}.")
        raised.append(key)
    return raised
