"""The eth_call simulation of an owner action, as the Safe or the server key will make the call."""
from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from chain import safe as chain_safe
from chain import transactions
from chain.config import ChainConfig
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ContractAction,
    Custody,
)

from . import transitions


def simulate_call(chain: str, to: str, data: str, sender: str) -> transactions.Simulation:
    try:
        return transactions.simulate(chain, to=to, data=data, sender=sender)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{chain} RPC unreachable, nothing was done: {exc}"}) from None


def safe_of(cfg: ChainConfig) -> chain_safe.SafeState:
    """The Safe that owns the chain's contracts, read from the chain; refuses an EOA owner in safe mode."""
    try:
        owner = chain_safe.owner_of(cfg.key, cfg.escrow)
        if not chain_safe.has_code(cfg.key, owner):
            raise ValidationError({"chain": f"{cfg.key}'s owner mode is safe, but the escrow's owner {owner} is a "
                                            f"plain account, not a Safe: transfer ownership to the Safe (README, "
                                            f"'Moving to a Safe') or set {cfg.key.upper()[:3]}_OWNER_MODE=eoa."})
        return chain_safe.read_safe(cfg.key, owner)
    except (ProviderUnavailable, RpcError) as exc:
        raise ValidationError({"chain": f"{cfg.key} RPC unreachable, nothing was done: {exc}"}) from None


def simulation_sender(action: ContractAction) -> str:
    """Who makes the contract call: the Safe in safe custody (the module calls through it too), else the signing
    key's address."""
    if action.custody in (Custody.SAFE, Custody.GUARDIAN, Custody.GUARDIAN_KEY):
        return action.safe_address
    return transitions.server_signer(transitions.ROLE[action.custody])


def simulate_action(action: ContractAction) -> dict[str, Any]:
    """A fresh eth_call of the action's contract call, for confirmation pages (never raises)."""
    try:
        sim = transactions.simulate(action.chain, to=action.to_address, data=action.calldata,
                                    sender=simulation_sender(action))
        return sim.as_dict()
    except (ValidationError, ProviderUnavailable, RpcError) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        return {"ok": False, "reason": f"could not simulate: {text}", "gas": None, "block": None}
