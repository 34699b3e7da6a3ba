"""The contracts check: each escrow's paused state and solvency, and its settings changed outside the back office."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert
from chain.config import configured_chains
from chain.models import ChainEvent, ChainState
from chain.status import read_contract_status
from ops.models import ActionStatus, ContractAction

logger = logging.getLogger(__name__)


def check_contracts() -> list[str]:
    """paused() == true is a P0 (alert table); solvency short is a P0 too. Both kept on ChainState. An owner
    setting (treasury, pool, fees, timeouts, supported tokens) that changed since the last check with no contract
    action of the back office making it is a P1: the owners' own tools, or someone holding their keys."""
    raised = []
    for chain in configured_chains():
        status = read_contract_status(chain)
        if not status.ok:
            continue
        detail = {t.symbol: {"escrow": str(t.escrow_balance_at_cursor), "open_orders": str(t.open_orders_total)}
                  for t in status.tokens}
        now, settings_now = timezone.now(), status.owner_settings()
        with transaction.atomic():
            state, _ = ChainState.objects.select_for_update().get_or_create(chain=chain)
            before, since = state.contract_settings or {}, state.contract_settings_checked_at
            state.paused, state.paused_checked_at, state.solvency_ok = status.paused, now, status.balanced
            state.solvency_checked_at, state.solvency_detail = now, detail
            fields = ["paused", "paused_checked_at", "solvency_ok", "solvency_checked_at", "solvency_detail"]
            # A run that read an older block (an overlapping run, a lagging provider) records nothing over a newer.
            if not (before.get("escrow") == settings_now["escrow"] and (before.get("block") or 0) > status.block):
                state.contract_settings, state.contract_settings_checked_at = settings_now, now
                fields += ["contract_settings", "contract_settings_checked_at"]
            state.save(update_fields=fields)
            # In the same transaction: a crash cannot record the change and lose its alert.
            unexplained = (_settings_changed_outside(chain, before, settings_now, since)
                           if "contract_settings" in fields and before.get("escrow") == settings_now["escrow"] else [])
            if unexplained:
                raise_alert(key=f"contract-settings-changed:{chain}", severity="P1", source="check_contracts",
                            title=f"{chain}: escrow settings changed outside the back office",
                            message="; ".join(unexplained) + ". No contract action of the back office made this: "
                                    "check with every Safe owner that it was intended, and read the contract status page.")
                raised.append(f"contract-settings-changed:{chain}")
        if status.paused:
            raise_alert(key=f"contract-paused:{chain}", severity="P0", source="check_contracts",
                        title=f"{chain} escrow is PAUSED", message="RB-05: all trading is blocked on this chain.")
            raised.append(f"contract-paused:{chain}")
        if not status.solvent:
            short = [f"{t.symbol} short {-t.difference}" for t in status.tokens if not t.solvent]
            raise_alert(key=f"escrow-insolvent:{chain}", severity="P0", source="check_contracts",
                        title=f"{chain} escrow holds less than its open orders", message="; ".join(short))
            raised.append(f"escrow-insolvent:{chain}")
    return raised


# Which action kind sets which owner setting, and the parameters it would carry for a value.
SETTING_ACTIONS = {
    "treasury": ("set_treasury", lambda v: {"treasury": v}),
    "platform_fee_bps": ("set_platform_fee", lambda v: {"bps": v}),
    "arbitrator_fee_bps": ("set_arbitrator_fee", lambda v: {"bps": v}),
    "timeouts": ("set_timeouts", lambda v: dict(zip(("seller_timeout", "buyer_timeout", "dispute_timeout"), v))),
}


def _settings_changed_outside(chain: str, before: dict, now: dict, since: datetime | None) -> list[str]:
    """Each change from `before` to `now` (same escrow) that no sent or confirmed back-office action explains
    (same kind, same value, sent since a day before the last check: it may have waited in the mempool across
    that check). A token the back office learns of (from its event, as the sync catches up) counts only if the
    owner set it after the last check's block."""
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
    made = ContractAction.objects.filter(chain=chain, status__in=[ActionStatus.SENT, ActionStatus.CONFIRMED],
                                         kind__in={kind for _, kind, _ in changes if kind})
    if since is not None:
        made = made.filter(sent_at__gte=since - timedelta(days=1))
    done = list(made.values_list("kind", "params"))
    return [message for message, kind, params in changes if (kind, params) not in done]


def _tokens_set_after(chain: str, block: int) -> set[str]:
    """The tokens whose SupportedTokenSet the owner emitted after `block` (its few events, through their index)."""
    rows = ChainEvent.objects.owner_events(chain).filter(event="SupportedTokenSet", block_number__gt=block)
    return {str(args.get("token", "")).lower() for args in rows.values_list("args", flat=True)}
