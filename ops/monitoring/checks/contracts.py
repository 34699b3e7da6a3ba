"""The contracts check: each escrow's paused state and solvency, and its settings changed outside the back office.

Every comparison of the chain with the mirror reads both at one block (the mirror's cursor, in one snapshot), and a
disagreement pages only when it holds at a confirmed block and again at a later one; seen once, it is a P3
observation. The same evaluation runs every minute (beat) and as soon as the sync has applied new blocks, and a
certain finding (insolvent, or settings changed outside the back office, each confirmed) pauses the chain by itself
where its automatic pause is on (`ops.actions.autopause`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from chain.config import configured_chains
from chain.models import ChainEvent, ChainState
from chain.status import ContractStatus, read_contract_status
from ops.actions import autopause
from ops.actions.selectors import actions_made, paused_by_back_office
from ops.models import AutoPauseTrigger

logger = logging.getLogger(__name__)

SOURCE = "check_contracts"


@dataclass
class ContractVerdict:
    """What one evaluation of a chain's contracts found, each finding with the block it holds at."""
    chain: str
    status: ContractStatus
    short: list[str] = field(default_factory=list)  # "USDC short 479.7", at the cursor block
    insolvent: str = ""  # "", "observed" (first sight) or "confirmed" (again at a later block)
    short_since: int | None = None
    short_since_at: datetime | None = None
    settings_changes: list[str] = field(default_factory=list)
    settings: str = ""  # "", "observed" or "confirmed"
    settings_since: int | None = None
    paused_by_us: str = ""  # the back-office pause that explains paused() (then its P0 is the action's own)
    raised: list[str] = field(default_factory=list)


def solvency_rule(short_since: int | None, at: int, *, solvent: bool) -> tuple[int | None, str]:
    """The two-observation rule of a solvency read at block `at`, given the block it was first seen short at:
    (that block after this read, and "" when solvent, "observed" when seen once, "confirmed" when short again at a
    later block: the P0 and the automatic pause). The live check and the pause drill both decide with it."""
    if solvent:
        return None, ""
    since = at if short_since is None else short_since
    return since, "confirmed" if at > since else "observed"


def evaluate_contract(chain: str) -> ContractVerdict | None:
    """Read the chain's contracts against the mirror at one block, record what holds (ChainState) and raise or
    resolve its alerts, under the chain's row lock: a run that read an older block than the last one recorded
    decides nothing."""
    status = read_contract_status(chain)
    if not status.ok:
        return None
    verdict = ContractVerdict(chain=chain, status=status)
    at = status.cursor_block
    detail = {t.symbol: {"escrow": str(t.escrow_balance_at_cursor), "open_orders": str(t.open_orders_total)}
              for t in status.tokens}
    now, settings_now = timezone.now(), status.owner_settings()
    # A provider whose head is below the mirror's cursor (a lagging fallback) was asked at its own head, not at the
    # cursor: the totals are then newer than the balances, the race again. Such a read decides nothing.
    comparable = at is not None and at <= status.block
    with transaction.atomic():
        state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
        fields = ["paused", "paused_checked_at"]
        state.paused, state.paused_checked_at = status.paused, now
        if comparable and (state.solvency_block is None or at >= state.solvency_block):
            state.solvency_short_since, verdict.insolvent = solvency_rule(state.solvency_short_since, at,
                                                                          solvent=status.solvent)
            if not status.solvent:
                verdict.short = [f"{t.symbol} short {-t.difference}" for t in status.tokens if not t.solvent]
                verdict.short_since = state.solvency_short_since
            state.solvency_ok, state.solvency_block = status.balanced, at
            state.solvency_checked_at, state.solvency_detail = now, {**detail, "block": at}
            fields += ["solvency_ok", "solvency_block", "solvency_short_since", "solvency_checked_at",
                       "solvency_detail"]
        elif at is not None:  # an older read than the last, or a provider behind the cursor: it decides nothing
            verdict.insolvent = "stale"
        fields += _record_settings(chain, state, settings_now, now, verdict)
        state.save(update_fields=fields)
        verdict.paused_by_us = paused_by_back_office(chain) if status.paused else ""
        # In the same transaction: a crash cannot record a confirmed change (and move the baseline) and lose its page.
        verdict.raised = alert_contract(verdict)
    return verdict


def _record_settings(chain: str, state: ChainState, settings_now: dict, now: datetime,
                     verdict: ContractVerdict) -> list[str]:
    """The settings watch: a change no back-office action explains is an observation at the block it is first seen
    and confirmed at a later block, when the baseline moves on. Returns the ChainState fields it changed."""
    before, since = state.contract_settings or {}, state.contract_settings_checked_at
    same_escrow = before.get("escrow") == settings_now["escrow"]
    block = settings_now.get("block") or 0
    if same_escrow and (before.get("block") or 0) > block:
        return []  # an older read (an overlapping run, a lagging provider) records nothing over a newer
    unexplained = _settings_changed_outside(chain, before, settings_now, since) if same_escrow else []
    pending = state.contract_settings_pending
    if unexplained and (pending is None or pending.get("changes") != unexplained):
        # First sight at this block: kept as an observation, the baseline stays where it was.
        state.contract_settings_pending = {"block": block, "changes": unexplained, "at": now.isoformat()}
        verdict.settings, verdict.settings_changes, verdict.settings_since = "observed", unexplained, block
        return ["contract_settings_pending"]
    if unexplained and block > pending["block"]:
        verdict.settings, verdict.settings_changes, verdict.settings_since = "confirmed", unexplained, pending["block"]
    elif unexplained:
        verdict.settings, verdict.settings_changes, verdict.settings_since = "observed", unexplained, pending["block"]
        return []
    state.contract_settings, state.contract_settings_checked_at = settings_now, now
    state.contract_settings_pending = None
    return ["contract_settings", "contract_settings_checked_at", "contract_settings_pending"]


def alert_contract(verdict: ContractVerdict) -> list[str]:
    """Raise what the verdict holds for its chain and resolve what cleared there; returns the keys raised."""
    chain, status, raised = verdict.chain, verdict.status, []
    if status.paused:
        raise_alert(key=f"contract-paused:{chain}", severity="P0", source=SOURCE,
                    title=f"{chain} escrow is PAUSED", message="RB-05: all trading is blocked on this chain.",
                    inhibited=verdict.paused_by_us)
        raised.append(f"contract-paused:{chain}")
    if verdict.insolvent in ("observed", "confirmed"):
        where = (f"at block {status.cursor_block} (the mirror's cursor, both sides read there)"
                 + (f", and already at block {verdict.short_since}" if verdict.insolvent == "confirmed" else ""))
        if verdict.insolvent == "confirmed":
            raise_alert(key=f"escrow-insolvent:{chain}", severity="P0", source=SOURCE,
                        title=f"{chain} escrow holds less than its open orders",
                        message="; ".join(verdict.short) + f" {where}. RB-05: pause the contract (Emergency stop).")
            raised.append(f"escrow-insolvent:{chain}")
        raise_alert(key=f"escrow-short-observed:{chain}", severity="P3", source=SOURCE,
                    title=f"{chain} escrow read short of its open orders once",
                    message="; ".join(verdict.short) + f" {where}. It pages (P0) only if it holds at a later block.")
        raised.append(f"escrow-short-observed:{chain}")
    elif verdict.insolvent == "stale":
        raised += [f"escrow-insolvent:{chain}", f"escrow-short-observed:{chain}"]  # undecided: left as they are
    if verdict.settings == "confirmed":
        raise_alert(key=f"contract-settings-changed:{chain}", severity="P1", source=SOURCE,
                    title=f"{chain}: escrow settings changed outside the back office",
                    message="; ".join(verdict.settings_changes) + f" (seen at block {verdict.settings_since} and again "
                            f"at {status.settings_block}). No contract action of the back office made this: check "
                            "with every Safe owner that it was intended, and read the contract status page.")
        raised.append(f"contract-settings-changed:{chain}")
    elif verdict.settings == "observed":
        raise_alert(key=f"contract-settings-observed:{chain}", severity="P3", source=SOURCE,
                    title=f"{chain}: escrow settings changed, not yet explained",
                    message="; ".join(verdict.settings_changes) + f" at block {verdict.settings_since}. It pages "
                            "(P1) if no back-office action explains it at a later block.")
        raised.append(f"contract-settings-observed:{chain}")
    # The settings change stays firing until staff acknowledge it: it was a change, not a condition that clears.
    settle_alerts(source=SOURCE, scope=[f"contract-paused:{chain}", f"escrow-insolvent:{chain}",
                                        f"escrow-short-observed:{chain}", f"contract-settings-observed:{chain}"],
                  raised=raised)
    return raised


def respond(verdict: ContractVerdict) -> None:
    """The certain findings pause the chain by itself where its automatic pause is on."""
    if verdict.insolvent == "confirmed":
        autopause.auto_pause(chain=verdict.chain, trigger=AutoPauseTrigger.INSOLVENT, evidence={
            "short": "; ".join(verdict.short), "first_block": verdict.short_since,
            "block": verdict.status.cursor_block})
    if verdict.settings == "confirmed":
        autopause.auto_pause(chain=verdict.chain, trigger=AutoPauseTrigger.SETTINGS, evidence={
            "changes": "; ".join(verdict.settings_changes), "first_block": verdict.settings_since,
            "block": verdict.status.settings_block})


def check_contract(chain: str) -> list[str]:
    """One chain: evaluate, alert, respond. Nothing is resolved for a chain whose contracts could not be read."""
    verdict = evaluate_contract(chain)
    if verdict is None:
        return []
    respond(verdict)
    return verdict.raised


def check_contracts() -> list[str]:
    """Every configured chain (beat, every minute): paused() is a P0 unless the back office paused it; insolvency a
    P0 and settings changed outside the back office a P1, each once confirmed at a later block."""
    raised = []
    for chain in configured_chains():
        raised += check_contract(chain)
    return raised


# Which action kind sets which owner setting, and the parameters it would carry for a value.
SETTING_ACTIONS = {
    "treasury": ("set_treasury", lambda v: {"treasury": v}),
    "platform_fee_bps": ("set_platform_fee", lambda v: {"bps": v}),
    "arbitrator_fee_bps": ("set_arbitrator_fee", lambda v: {"bps": v}),
    "timeouts": ("set_timeouts",
                 lambda v: dict(zip(("seller_timeout", "buyer_timeout", "dispute_timeout"), v, strict=True))),
}


def _settings_changed_outside(chain: str, before: dict, now: dict, since: datetime | None) -> list[str]:
    """Each change from `before` to `now` (same escrow) that no back-office action explains (same kind, same value;
    signed, sent or confirmed: `actions_made`). A token the back office learns of (from its event, as the sync
    catches up) counts only if the owner set it after the last check's block."""
    changes = []  # (message, kind, params)
    for key, value in now.items():
        if key in ("escrow", "block") or key not in before or before[key] == value:
            continue  # the record's own fields, a setting recorded since an upgrade, or no change
        if key == "tokens":
            set_after = _tokens_set_after(chain, before.get("block") or 0)
            for token, supported in value.items():
                if before[key].get(token, None if token in set_after else supported) != supported:
                    changes.append((f"token {token} {'now' if supported else 'no longer'} supported",
                                    "set_supported_token", {"token": token, "supported": supported}))
        elif key in SETTING_ACTIONS:
            kind, params = SETTING_ACTIONS[key][0], SETTING_ACTIONS[key][1](value)
            changes.append((f"{key}: {before[key]} → {value}", kind, params))
        else:
            changes.append((f"{key}: {before[key]} → {value}", "", {}))
    if not changes:
        return []
    done = actions_made(chain, {kind for _, kind, _ in changes if kind}, since)
    return [message for message, kind, params in changes if (kind, params) not in done]


def _tokens_set_after(chain: str, block: int) -> set[str]:
    """The tokens whose SupportedTokenSet the owner emitted after `block` (its few events, through their index)."""
    rows = ChainEvent.objects.owner_events(chain).filter(event="SupportedTokenSet", block_number__gt=block)
    return {str(args.get("token", "")).lower() for args in rows.values_list("args", flat=True)}
