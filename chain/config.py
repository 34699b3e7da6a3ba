"""Per-chain configuration: settings (environment) first, then the local deployment `make run` writes."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class ChainConfig:
    key: str
    name: str
    chain_id: int
    rpc_url: str
    rpc_fallback: str
    escrow: str
    arbitrator_pool: str
    start_block: int
    confirmations: int
    block_time: float
    poll_seconds: float
    batch_blocks: int
    owner_mode: str = "safe"
    guardian_module: str = ""
    safe_known_modules: tuple[str, ...] = ()  # modules and guard the Safe's owners installed on purpose
    min_gas_balance: str = "0.05"
    max_rps: float = 0.0  # per-provider request budget (0: none)
    max_in_flight: int = 8  # the most eth_getLogs requests a catch-up keeps in flight
    max_block_range: int = 0  # the most blocks the primary answers in one eth_getLogs (0: none known)
    fallback_max_block_range: int = 0  # the fallback's
    auto_pause: bool = False  # pause by itself when a certain trigger holds (<PREFIX>_AUTO_PAUSE)
    tokens: dict[str, str] = field(default_factory=dict)
    sanctions_oracle: str = ""  # isSanctioned(address) contract; empty: wallets are screened against the lists only

    @property
    def is_configured(self) -> bool:
        return bool(self.rpc_url and self.escrow and self.arbitrator_pool)

    @property
    def is_safe(self) -> bool:
        return self.owner_mode == "safe"

    @property
    def contracts(self) -> list[str]:
        return [a.lower() for a in (self.escrow, self.arbitrator_pool) if a]


_cache: dict[str, tuple[float, dict]] = {}


def _local_deployment() -> dict:
    """The dev deployment file, re-read when it changes (make run redeploys on a fresh chain)."""
    path = settings.CHAIN_DEPLOYMENT_FILE
    if settings.PRODUCTION or not path.exists():
        return {}
    mtime = path.stat().st_mtime
    cached = _cache.get(str(path))
    if cached and cached[0] == mtime:
        return cached[1]
    data = json.loads(path.read_text())
    _cache[str(path)] = (mtime, data)
    return data


def get_chain_config(chain: str) -> ChainConfig:
    if chain not in settings.CHAINS:
        raise ImproperlyConfigured(f"Unknown chain {chain!r}: use one of {', '.join(settings.CHAINS)}.")
    base = settings.CHAINS[chain]
    cfg = ChainConfig(key=chain, **{k: base[k] for k in (
        "name", "chain_id", "rpc_url", "rpc_fallback", "escrow", "arbitrator_pool", "start_block",
        "confirmations", "block_time", "poll_seconds", "batch_blocks", "owner_mode", "guardian_module",
        "min_gas_balance")}, max_rps=float(base.get("max_rps", 0.0)),
        max_in_flight=int(base.get("max_in_flight", 8)),
        max_block_range=int(base.get("max_block_range", 0)),
        fallback_max_block_range=int(base.get("fallback_max_block_range", base.get("max_block_range", 0))),
        auto_pause=base.get("auto_pause", "off") == "on",
        safe_known_modules=tuple(base.get("safe_known_modules", ())))
    cfg = replace(cfg, sanctions_oracle=base.get("sanctions_oracle", ""))
    local = _local_deployment().get(chain)
    if local:
        # Environment wins; the local deployment only fills what the environment left unset.
        cfg = replace(
            cfg,
            rpc_url=cfg.rpc_url or local.get("rpc_url", ""),
            rpc_fallback=cfg.rpc_fallback or local.get("rpc_fallback", ""),
            escrow=cfg.escrow or local.get("escrow", ""),
            arbitrator_pool=cfg.arbitrator_pool or local.get("arbitrator_pool", ""),
            chain_id=local.get("chain_id", cfg.chain_id) if not base.get("rpc_url") else cfg.chain_id,
            start_block=cfg.start_block or int(local.get("deploy_block", 0)),
            confirmations=int(local.get("confirmations", cfg.confirmations)),
            tokens=dict(local.get("tokens", {})),
            guardian_module=cfg.guardian_module or local.get("custody", {}).get("guardian_module", ""),
        )
        cfg = replace(cfg, sanctions_oracle=cfg.sanctions_oracle or local.get("sanctions_oracle", "").lower())
    return cfg


def configured_chains() -> list[str]:
    return [chain for chain in settings.CHAINS if get_chain_config(chain).is_configured]
