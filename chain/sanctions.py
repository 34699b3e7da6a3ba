"""The sanctions oracle on each chain (`isSanctioned(address) returns (bool)`, Chainalysis's interface): many
wallets checked in few requests, every answer read at one block.

A JSON-RPC batch of `eth_call`s (ORACLE_BATCH per HTTP request) rather than one request per wallet, and rather
than a multicall contract, which a local anvil does not have. Every call names the same block (the chain's head
minus its confirmation depth), so the block is the evidence of the whole answer.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from eth_utils import keccak

from .config import get_chain_config
from .rpc import RpcClient, RpcError, get_client

IS_SANCTIONED = "0x" + keccak(text="isSanctioned(address)")[:4].hex()
# eth_calls per JSON-RPC batch: providers cap a batch's size (commonly at 100 to 1,000 calls); 100 stays under
# every cap we know while still turning a thousand wallets into ten requests.
ORACLE_BATCH = 100


class OracleError(RuntimeError):
    """The oracle did not answer as an isSanctioned contract does (no contract there, a wrong address, a revert)."""


@dataclass(frozen=True)
class OracleAnswer:
    chain: str
    oracle: str
    block: int
    checked: tuple[str, ...]
    listed: frozenset[str]
    requests: int
    at: datetime


def oracle_address(chain: str) -> str:
    """The chain's configured oracle (environment, else the local deployment), lower case; "" when none."""
    return get_chain_config(chain).sanctions_oracle


def _bool_word(chain: str, oracle: str, wallet: str, result: object) -> bool:
    if not isinstance(result, str) or len(result) != 66 or not result.startswith("0x"):
        what = "no contract" if result in ("0x", "") else f"{str(result)[:20]!r}"
        raise OracleError(f"{chain}: the sanctions oracle {oracle} answered isSanctioned({wallet}) with {what}: check "
                          f"that the chain's <PREFIX>_SANCTIONS_ORACLE names the oracle contract on this chain.")
    value = int(result, 16)
    if value not in (0, 1):
        raise OracleError(f"{chain}: the sanctions oracle {oracle} answered isSanctioned({wallet}) with {result}, "
                          "not a bool: is that address an isSanctioned(address) contract?")
    return value == 1


def check_wallets(chain: str, wallets: list[str], *, client: RpcClient | None = None) -> OracleAnswer:
    """Ask the chain's oracle about `wallets` (canonical lower-case addresses), ORACLE_BATCH per request, all at
    one confirmed block. Raises OracleError when no oracle is configured or it answers as no oracle would, and
    the RPC client's errors (RpcError, ProviderUnavailable) when the chain cannot be reached."""
    oracle = oracle_address(chain)
    if not oracle:
        raise OracleError(f"{chain}: no sanctions oracle is configured: set its <PREFIX>_SANCTIONS_ORACLE.")
    cfg = get_chain_config(chain)
    client = client or get_client(chain)
    block = max(client.block_number() - cfg.confirmations, 0)
    listed: set[str] = set()
    requests = 1
    for start in range(0, len(wallets), ORACLE_BATCH):
        chunk = wallets[start:start + ORACLE_BATCH]
        calls = [("eth_call", [{"to": oracle, "data": IS_SANCTIONED + w[2:].rjust(64, "0")}, hex(block)])
                 for w in chunk]
        try:
            results = client.batch(calls)
        except RpcError as exc:
            raise OracleError(f"{chain}: the sanctions oracle {oracle} refused isSanctioned at block {block}: "
                              f"{exc.message}") from exc
        requests += 1
        listed.update(w for w, r in zip(chunk, results, strict=True) if _bool_word(chain, oracle, w, r))
    return OracleAnswer(chain=chain, oracle=oracle, block=block, checked=tuple(wallets), listed=frozenset(listed),
                        requests=requests, at=datetime.now(timezone.utc))
