"""The chains, from the environment: CHAINS names them, each reads its variables under its own prefix.

Kept apart from settings.py (and free of Django imports) so that devservices, which runs before
Django is set up, derives the same prefixes.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Mapping

from django.core.exceptions import ImproperlyConfigured

DEFAULT_CHAINS = "bsc,ethereum"
# A chain's name is a model value (max_length=16), a queue name (sync.<name>) and a metrics label.
NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")

# The two chains the runbook names keep its prefixes (BSC_RPC_URL, ETH_RPC_URL) and their known defaults.
# "label" is what lists of orders show: the short form staff use in the runbook ("BSC"); any other chain's is its name.
LEGACY = {
    "bsc": {"prefix": "BSC", "name": "BNB Smart Chain", "label": "BSC", "chain_id": 56, "confirmations": 15,
            "block_time": 0.75, "poll": 3.0},  # 0.75 s blocks since mid-2025; polled every 3 s as the runbook says
    "ethereum": {"prefix": "ETH", "name": "Ethereum", "label": "Ethereum", "chain_id": 1, "confirmations": 12,
                 "block_time": 12.0, "poll": 12.0},
}
# Any other chain: no chain id can be guessed; the rest are safe, slow defaults its variables override.
GENERIC = {"confirmations": 12, "block_time": 12.0}


def chain_prefix(chain: str) -> str:
    """BSC and ETH for the runbook's two chains, the upper-cased name for any other (base: BASE_RPC_URL)."""
    return LEGACY[chain]["prefix"] if chain in LEGACY else chain.upper()


def chain_names(value: str) -> list[str]:
    """The CHAINS variable as a list of names, or an error that says what to write instead."""
    names = [part.strip() for part in value.split(",") if part.strip()]
    if not names:
        raise ImproperlyConfigured(f"CHAINS={value!r} names no chain: set CHAINS to comma-separated chain names, "
                                   f"e.g. CHAINS={DEFAULT_CHAINS}.")
    for name in names:
        if not NAME_RE.match(name):
            raise ImproperlyConfigured(
                f"CHAINS={value!r}: {name!r} is not a chain name: use lower-case letters, digits and _, "
                f"starting with a letter, at most 16 characters (e.g. CHAINS={DEFAULT_CHAINS},base).")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ImproperlyConfigured(f"CHAINS={value!r} names {', '.join(duplicates)} twice: list each chain once.")
    prefixes: dict[str, str] = {}
    for name in names:
        other = prefixes.setdefault(chain_prefix(name), name)
        if other != name:
            raise ImproperlyConfigured(f"CHAINS={value!r}: {other} and {name} would both read {chain_prefix(name)}_… "
                                       f"variables: rename one of them.")
    return names


def _get(environ: Mapping[str, str], key: str) -> str:
    return environ.get(key, "").strip()


def _number(environ: Mapping[str, str], key: str, default, kind):
    raw = _get(environ, key)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # float() also reads "nan" and "inf", which pass every range check below (nan > 0 is False, and so is nan <= 0).
    if value is None or (kind is float and not math.isfinite(value)):
        raise ImproperlyConfigured(f"{key}={raw!r} is not a{'n integer' if kind is int else ' number'}: "
                                   f"set {key} to a number or unset it.")
    return value


# (variable suffix, spec key, what makes a value wrong, the fix) for a chain's plain numbers.
_RANGES = (
    ("START_BLOCK", "start_block", lambda v: v < 0,
     "use the block the contracts were deployed in (0 or more), or unset it"),
    ("CONFIRMATIONS", "confirmations", lambda v: v < 0,
     "use 0 (apply blocks as soon as they are mined) or more; the sync reads up to head − confirmations"),
    ("BLOCK_TIME", "block_time", lambda v: v <= 0, "use the chain's seconds per block, more than 0 (e.g. 2, or 0.75)"),
    # IntervalSchedule's smallest unit is a microsecond: anything shorter would be written as every=0.
    ("POLL_SECONDS", "poll_seconds", lambda v: v < 1e-6,
     "use the seconds between two polls, more than 0 (e.g. 3), or unset it for the default"),
    ("SYNC_BATCH_BLOCKS", "batch_blocks", lambda v: v < 1, "use 1 or more blocks per request (2000 when unset)"),
    ("RPC_MAX_RPS", "max_rps", lambda v: v < 0, "use a number of requests per second, or 0 for no budget"),
    ("SYNC_MAX_IN_FLIGHT", "max_in_flight", lambda v: v < 1, "use 1 (one eth_getLogs at a time) or more"),
    ("RPC_MAX_BLOCK_RANGE", "max_block_range", lambda v: v < 0,
     "use the most blocks the provider allows in one eth_getLogs (e.g. 10000), or 0 when it has no such limit or "
     "it is unknown (the sync learns it from the provider's refusal)"),
    ("RPC_FALLBACK_MAX_BLOCK_RANGE", "fallback_max_block_range", lambda v: v < 0,
     "use the most blocks the fallback provider allows in one eth_getLogs (e.g. 5000), or 0 when it has no such "
     "limit or it is unknown; unset, it is the primary's"),
)


def _out_of_range(spec: dict, environ: Mapping[str, str]) -> list[str]:
    """What is wrong with a chain's numbers, one sentence each naming the variable, its value and the fix: a value
    out of range would not stop the settings but the sync, the schedule or a page later, far from its cause."""
    p = spec["prefix"]
    problems = []
    if _get(environ, f"{p}_CHAIN_ID") and spec["chain_id"] < 1:
        problems.append(f"{p}_CHAIN_ID is {spec['chain_id']}: use the chain's id (EIP-155, e.g. 8453 for Base), "
                        "a positive integer")
    for suffix, key, wrong, fix in _RANGES:
        if wrong(spec[key]):
            value = f"{spec[key]:g}" if isinstance(spec[key], float) else spec[key]
            problems.append(f"{p}_{suffix} is {value}: {fix}")
    bad = [a for a in spec["safe_known_modules"] if not re.fullmatch(r"0x[0-9a-f]{40}", a)]
    if bad:
        problems.append(f"{p}_SAFE_KNOWN_MODULES holds {', '.join(bad)}: use 0x-prefixed 20-byte addresses separated "
                        "by commas")
    try:
        gas = Decimal(spec["min_gas_balance"])
    except InvalidOperation:
        gas = None
    if gas is None or not gas.is_finite() or gas < 0:
        problems.append(f"{p}_MIN_GAS_BALANCE is {spec['min_gas_balance']!r}: use an amount of the chain's "
                        "native coin, 0 or more (e.g. 0.05)")
    return problems


# The Chainalysis sanctions oracle's address on Ethereum and BNB Chain (README: Sanctions screening).
CHAINALYSIS_SANCTIONS_ORACLE = "0x40c57923924b5c5c5455c48d93317139addac8fb"


def _sanctions_oracle_problems(spec: dict) -> list[str]:
    address = spec["sanctions_oracle"]
    if address and not re.fullmatch(r"0x[0-9a-f]{40}", address):
        return [f"{spec['prefix']}_SANCTIONS_ORACLE is {address!r}: use the oracle contract's address, 0x followed by "
                f"40 hex digits ({CHAINALYSIS_SANCTIONS_ORACLE} on Ethereum and BNB Chain), or unset it"]
    return []


def chain_spec(chain: str, environ: Mapping[str, str], *, production: bool) -> dict:
    """One chain's settings from its <PREFIX>_… variables. A chain with an RPC URL is a remote chain: it must
    say which chain id it expects and (in production) where its contracts are."""
    prefix = chain_prefix(chain)
    known = LEGACY.get(chain, {})
    rpc_url = _get(environ, f"{prefix}_RPC_URL")
    missing = []
    if production and not rpc_url:
        missing.append(f"{prefix}_RPC_URL")
    if rpc_url and not known and not _get(environ, f"{prefix}_CHAIN_ID"):
        missing.append(f"{prefix}_CHAIN_ID")
    if production:
        missing += [f"{prefix}_{v}" for v in ("ESCROW_CONTRACT", "ARBITRATOR_POOL")
                    if not _get(environ, f"{prefix}_{v}")]
    if missing:
        names = ", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]
        raise ImproperlyConfigured(
            f"CHAINS names {chain!r} but {names} {'is' if len(missing) == 1 else 'are'} not set: "
            f"set {'it' if len(missing) == 1 else 'them'} (see README, Configuration), or remove {chain} from CHAINS.")
    block_time = _number(environ, f"{prefix}_BLOCK_TIME", known.get("block_time", GENERIC["block_time"]), float)
    name = _get(environ, f"{prefix}_NAME") or known.get("name") or chain.replace("_", " ").title()
    spec = {
        "name": name,  # forms, filters and detail pages
        "label": known.get("label") or name,  # lists (chain.admin)
        "prefix": prefix,
        "short": prefix.lower(),  # the runbook's short name: rpc_eth, poll-eth-events
        # 0 until known: in development the local deployment fills it in (chain.config).
        "chain_id": _number(environ, f"{prefix}_CHAIN_ID", known.get("chain_id", 0), int),
        "rpc_url": rpc_url,
        "rpc_fallback": _get(environ, f"{prefix}_RPC_FALLBACK"),
        "escrow": _get(environ, f"{prefix}_ESCROW_CONTRACT"),
        "arbitrator_pool": _get(environ, f"{prefix}_ARBITRATOR_POOL"),
        "start_block": _number(environ, f"{prefix}_START_BLOCK", 0, int),
        "confirmations": _number(environ, f"{prefix}_CONFIRMATIONS",
                                 known.get("confirmations", GENERIC["confirmations"]), int),
        "block_time": block_time,
        # Another chain is polled once a block, but not more often than every 3 s (BSC's runbook pace).
        "poll_seconds": _number(environ, f"{prefix}_POLL_SECONDS", known.get("poll", max(3.0, block_time)), float),
        # 10,000: the widest eth_getLogs the paid plans commonly allow (QuickNode, Alchemy on most chains, Infura's
        # range limit); a provider allowing fewer says so in its refusal, and the sync keeps to what it said.
        "batch_blocks": _number(environ, f"{prefix}_SYNC_BATCH_BLOCKS", 10_000, int),
        # Requests per second each of the chain's providers gets from one process (0: no budget). Unlimited by
        # default: plans differ by orders of magnitude (a local node, a free tier at ~10/s, a paid one at
        # hundreds), a guessed number would throttle the fast ones or still exceed the slow ones, and a
        # provider's own 429s are waited out anyway. Set it to the plan's rate to stay clear of those waits.
        "max_rps": _number(environ, f"{prefix}_RPC_MAX_RPS", 0.0, float),
        # The most eth_getLogs requests a catch-up keeps in flight: a distant provider's latency is paid once per
        # window. The window follows the provider's answers up to this (chain.rpc_limits.InFlightWindow): it starts
        # at 4, grows while light answers come as fast as ever, shrinks on 429s and on answers slowing down.
        "max_in_flight": _number(environ, f"{prefix}_SYNC_MAX_IN_FLIGHT", 8, int),
        # The most blocks the provider answers in one eth_getLogs (0: no such limit, or unknown until it refuses a
        # range and names its limit). The fallback's own where it differs (a free tier behind a paid plan).
        "max_block_range": _number(environ, f"{prefix}_RPC_MAX_BLOCK_RANGE", 0, int),
        "fallback_max_block_range": _number(
            environ, f"{prefix}_RPC_FALLBACK_MAX_BLOCK_RANGE",
            _number(environ, f"{prefix}_RPC_MAX_BLOCK_RANGE", 0, int), int),
        # Custody: "safe" (the owner is a Safe multisig; the server holds no owner key) or "eoa"
        # (one owner key on the server: the weaker option, kept for marketplaces that still use it).
        "owner_mode": (_get(environ, f"{prefix}_OWNER_MODE") or "safe").lower(),
        "guardian_module": _get(environ, f"{prefix}_GUARDIAN_MODULE"),
        # Modules and a transaction guard the Safe's owners installed on purpose: the custody check names any
        # other at every run (a module moves funds with no owner signature; a guard can refuse every execution).
        "safe_known_modules": [a.strip().lower() for a in _get(environ, f"{prefix}_SAFE_KNOWN_MODULES").split(",")
                               if a.strip()],
        # RB-05 without a person: pause through the guardian module with the server's GUARDIAN_KEY (or the owner key
        # in eoa custody) when a certain trigger holds. Off unless asked for; make run turns it on.
        "auto_pause": (_get(environ, f"{prefix}_AUTO_PAUSE") or "off").lower(),
        # Below this (in the chain's native coin) the relayer's or keeper's gas balance raises an alert.
        "min_gas_balance": _get(environ, f"{prefix}_MIN_GAS_BALANCE") or "0.05",
        # The sanctions oracle new wallets are checked against (isSanctioned(address)); empty: the lists only.
        "sanctions_oracle": _get(environ, f"{prefix}_SANCTIONS_ORACLE").lower(),
    }
    if spec["auto_pause"] not in ("on", "off"):
        raise ImproperlyConfigured(f"{prefix}_AUTO_PAUSE is {spec['auto_pause']!r}: use on (pause by itself when a "
                                   "certain trigger holds) or off.")
    if spec["owner_mode"] not in ("safe", "eoa"):
        raise ImproperlyConfigured(f"{prefix}_OWNER_MODE is {spec['owner_mode']!r}: use safe (a Safe multisig owns "
                                   "the contracts) or eoa.")
    problems = _out_of_range(spec, environ)
    problems += _sanctions_oracle_problems(spec)
    if problems:
        raise ImproperlyConfigured("; ".join(problems) + ".")
    return spec


def chains_from_env(environ: Mapping[str, str], *, production: bool) -> dict[str, dict]:
    """settings.CHAINS: {name: spec} in the order CHAINS lists them."""
    return {chain: chain_spec(chain, environ, production=production)
            for chain in chain_names(environ.get("CHAINS", DEFAULT_CHAINS))}
