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
