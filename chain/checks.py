"""System checks of custody: in safe mode the server must not hold a key that can act as owner alone."""
from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security)
def owner_key_in_safe_mode(app_configs, **kwargs):
    safe_chains = [key for key, spec in settings.CHAINS.items() if spec.get("owner_mode") == "safe"]
    has_owner_key = bool(settings.OWNER_KEY or settings.OWNER_KEYSTORE)
    if not safe_chains or not has_owner_key:
        return []
    message = (f"An owner key (OWNER_KEY / OWNER_KEYSTORE) is configured while {', '.join(safe_chains)} "
               f"use{'s' if len(safe_chains) == 1 else ''} safe custody.")
    hint = ("In safe mode the server holds only RELAYER_KEY and KEEPER_KEY: unset OWNER_KEY and OWNER_KEYSTORE, "
            "or set <CHAIN>_OWNER_MODE=eoa for a chain that still has a single owner key.")
    if settings.PRODUCTION:
        return [Error(message, hint=hint, id="chain.E001")]
    return [Warning(message, hint=hint, id="chain.W001")]


def _guardian_problems() -> tuple[list[str], list[str]]:
    """Why the automatic pause's GUARDIAN_KEY could do more than pause: it is the relayer's key, or an owner of a
    chain's Safe (then, with another owner, it would reach a 2-of-n threshold alone with the server); and, apart,
    the chains whose Safe could not be read to tell."""
    from . import safe as chain_safe
    from . import transactions
    from .config import get_chain_config
    from .rpc import ProviderUnavailable, RpcError

    try:
        guardian = transactions.signer_address("guardian")
    except transactions.SignerUnavailable as exc:
        return [str(exc)], []
    problems, unreadable = [], []
    for role in ("relayer", "keeper", "owner"):
        if transactions.has_key(role):
            try:
                if transactions.signer_address(role) == guardian:
                    problems.append(f"GUARDIAN_KEY is the same key as {role.upper()}_KEY")
            except transactions.SignerUnavailable:
                pass
    for chain, spec in settings.CHAINS.items():
        cfg = get_chain_config(chain)
        if spec.get("owner_mode") != "safe" or not cfg.is_configured:
            continue
        try:
            owner = chain_safe.owner_of(chain, cfg.escrow)
            if chain_safe.has_code(chain, owner) and guardian in chain_safe.read_safe(chain, owner).owners:
                problems.append(f"GUARDIAN_KEY ({guardian}) is an owner of {chain}'s Safe {owner}")
        except (ProviderUnavailable, RpcError) as exc:
            unreadable.append(f"{chain}'s Safe owners could not be read to compare with GUARDIAN_KEY: {exc}")
    return problems, unreadable


@register(Tags.security)
def guardian_key_only_pauses(app_configs, **kwargs):
    """The automatic pause's key must be able to pause and nothing else (the module guarantees the rest)."""
    if not (settings.GUARDIAN_KEY or settings.GUARDIAN_KEYSTORE):
        return []
    hint = ("Give the automatic pause a key of its own, registered only as a guardian of the pause module: never a "
            "Safe owner's key, the relayer's or the keeper's (README, 'The automatic pause').")
    level, code = (Error, "chain.E002") if settings.PRODUCTION else (Warning, "chain.W002")
    problems, unreadable = _guardian_problems()
    # A chain that cannot be read says nothing about the key: a warning in every mode. As an error it would stop
    # every management command (migrate, backup_database, contract_action) for as long as a provider is down.
    return ([level(problem, hint=hint, id=code) for problem in problems]
            + [Warning(problem, hint="Check the chain's RPC providers (RB-07); the check runs again at the next "
                                     "command or start.", id="chain.W003") for problem in unreadable])
