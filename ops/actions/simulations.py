"""The eth_call simulation of an owner action, as the Safe or the server key will make the call."""
from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import ValidationError

from chain import effects, transactions
from chain import safe as chain_safe
from chain.config import ChainConfig, get_chain_config
from chain.rpc import ProviderUnavailable, RpcError
from ops.models import (
    ContractAction,
    Custody,
)

from . import transitions

logger = logging.getLogger(__name__)
GUARDIAN_PAUSE = "0x8456cb59"  # pause(): the guardian module's, which makes the Safe call the escrow's


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


def _prevalidated(owner: str) -> bytes:
    """Safe's v=1 signature: r is the owner's address, valid when that owner sends the execTransaction itself."""
    return bytes.fromhex(owner.removeprefix("0x").rjust(64, "0")) + b"\0" * 32 + b"\x01"


def proposal_fork_call(*, chain: str, custody: str, to: str, data: str, safe: str = "") -> effects.ForkCall | None:
    """The call as it will run, for a simulation before any signature exists: through the Safe's execTransaction
    with the threshold its owners will reach (threshold 1 written into the fork, the first owner pre-validating),
    through the guardian module from its first guardian, or from the server's key. None: not simulated on a fork
    (the keeper's public timeout calls)."""
    if custody == Custody.SAFE:
        owner = chain_safe.read_safe(chain, safe).owners[0]
        return effects.ForkCall(sender=owner, to=safe, safe=safe, data=chain_safe.exec_transaction_calldata(
            to=to, data=data, signatures=_prevalidated(owner)))
    if custody == Custody.GUARDIAN:
        cfg = get_chain_config(chain)
        guardians = chain_safe.read_guardians(chain, cfg.guardian_module, safe).guardians
        return effects.ForkCall(sender=guardians[0], to=cfg.guardian_module, data=GUARDIAN_PAUSE)
    if custody in (Custody.OWNER_KEY, Custody.GUARDIAN_KEY):
        return effects.ForkCall(sender=transitions.server_signer(transitions.ROLE[custody]),
                                to=get_chain_config(chain).guardian_module if custody == Custody.GUARDIAN_KEY else to,
                                data=GUARDIAN_PAUSE if custody == Custody.GUARDIAN_KEY else data)
    return None


def proposal_effects(*, chain: str, custody: str, to: str, data: str, safe: str = "",
                     order_id: int | None = None, token: str | None = None) -> dict[str, Any]:
    """The state changes of an owner call being proposed (never raises: see simulate_effects)."""
    try:
        call = proposal_fork_call(chain=chain, custody=custody, to=to, data=data, safe=safe)
    except (ValidationError, ProviderUnavailable, RpcError, IndexError) as exc:
        text = "; ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc) or "no guardian"
        return {"method": "eth_call", "fallback": f"the call could not be set up on a fork ({text})"}
    return simulate_effects(chain=chain, call=call, order_id=order_id, token=token)


def simulate_effects(*, chain: str, call: effects.ForkCall | None, order_id: int | None = None,
                     token: str | None = None) -> dict[str, Any]:
    """The state changes of `call` on a fork of the chain at its head (chain.effects.simulate_on_fork; `order_id`
    and `token`: the order and the token the call names, see chain.effects.watch_for). When the fork
    cannot start (no anvil; a provider without that block's state) the eth_call simulation stands alone and the
    result says why: {method: "eth_call", fallback: reason}. Never raises."""
    if call is None:
        return {"method": "eth_call", "fallback": "not simulated on a fork: a public call of the keeper"}
    cfg = get_chain_config(chain)
    try:
        watch, names = effects.watch_for(chain, order_id=order_id, token=token)
        if cfg.guardian_module:
            names.setdefault(cfg.guardian_module.lower(), "guardian module")
        if call.safe:
            names[call.safe.lower()] = "Safe"
        block = transactions.head(chain)
        try:
            return effects.simulate_on_fork(chain, rpc_url=cfg.rpc_url, block=block, call=call, watch=watch,
                                            names=names)
        except effects.EffectsUnavailable as exc:
            # Once more on a fresh fork: a node that was slow to answer one request (a busy host) is no reason to
            # show no state changes; a fork that cannot start fails the same way again at once.
            logger.warning("fork simulation of %s failed, trying a fresh fork: %s", chain, exc)
            return effects.simulate_on_fork(chain, rpc_url=cfg.rpc_url, block=block, call=call, watch=watch,
                                            names=names)
    except effects.EffectsUnavailable as exc:
        reason = str(exc)
    except (ProviderUnavailable, RpcError) as exc:
        reason = f"{chain} RPC unreachable: {exc}"
    logger.warning("fork simulation of %s fell back to eth_call: %s", chain, reason)
    return {"method": "eth_call", "fallback": f"the fork could not start ({reason}): only the eth_call simulation "
                                              "ran, which shows whether it reverts but not what it changes"}


def action_fork_call(action: ContractAction, *, tx_data: str = "") -> effects.ForkCall | None:
    """For an action about to be sent: the very transaction the server will send (the relayer's execTransaction
    with the owners' signatures, the module call, the owner key's call) when `tx_data` is given, else the call as
    at proposal."""
    if action.custody == Custody.KEEPER:
        return None
    if tx_data:
        return effects.ForkCall(sender=transitions.server_signer(transitions.ROLE[action.custody]),
                                to=action.tx_to or action.to_address, data=tx_data)
    return proposal_fork_call(chain=action.chain, custody=action.custody, to=action.to_address,
                              data=action.calldata, safe=action.safe_address)


def preview_effects(action: ContractAction) -> dict[str, Any]:
    """The action's state changes if it were sent now (for the execute page: the signatures are not packed yet,
    so the Safe path is run as at proposal)."""
    if action.is_automatic or action.custody == Custody.KEEPER:
        return simulate_effects(chain=action.chain, call=None)
    return proposal_effects(chain=action.chain, custody=action.custody, to=action.to_address, data=action.calldata,
                            safe=action.safe_address, order_id=action.order_onchain_id,
                            token=action.params.get("token"))
