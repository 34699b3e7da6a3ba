"""The owner actions' writes, one doorway for the admin, the commands, the dispute desk and the tests.

Each stage lives in its own module (propose, execute, advance, emergency, signatures, keys, stale); this module
only names them. A test that replaces a function to inject a fault patches the module that looks it up (for
example `transitions.mark_action`, `transactions.broadcast`), not this one.
"""
from __future__ import annotations

from .advance import advance_contract_actions, replace_contract_action
from .emergency import approve_resume, emergency_stop, pause_now, propose_guardian_pause, request_resume
from .execute import execute_contract_action, send_signed_action
from .keys import SIGNING_ROLES, register_signing_key, revoke_signing_key, signing_key_challenge
from .local import forget_local_contract_actions
from .propose import approve_contract_action, propose_contract_action, propose_safe_tx_cancel, reject_contract_action
from .signatures import add_action_signature
from .simulations import preview_effects, simulate_action
from .stale import mark_stale_actions

__all__ = [
    "SIGNING_ROLES", "add_action_signature", "advance_contract_actions", "approve_contract_action", "approve_resume",
    "emergency_stop", "execute_contract_action", "forget_local_contract_actions", "mark_stale_actions", "pause_now",
    "propose_contract_action", "propose_guardian_pause", "propose_safe_tx_cancel", "register_signing_key",
    "reject_contract_action", "replace_contract_action", "request_resume", "revoke_signing_key", "send_signed_action",
    "signing_key_challenge", "simulate_action", "preview_effects",
]
