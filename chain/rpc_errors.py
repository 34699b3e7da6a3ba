"""The errors the chain's one doorway raises, in a module of their own: chain.rpc re-exports them, and callers
import them from there."""
from __future__ import annotations

from typing import Any


class RpcError(Exception):
    """The node answered with a JSON-RPC error (e.g. a revert): not the provider's fault."""

    def __init__(self, code: int, message: str, data: Any = None, provider: str | None = None):
        super().__init__(f"RPC error {code}: {message}")
        self.code, self.message, self.data = code, message, data
        self.provider: str | None = provider  # the role of the provider that answered


class RangeTimedOut(RpcError):
    """An eth_getLogs over several blocks got no answer in time: the range is too heavy for the provider,
    which is not (yet) its fault. The sync halves the range, as for a refusal of its size."""

    def __init__(self, blocks: int, timeout: float, provider: str):
        super().__init__(0, f"eth_getLogs over {blocks} blocks timed out after {timeout:g} s")
        self.provider = provider


class RangeOverCap(RpcError):
    """An eth_getLogs wider than the provider whose turn it is answers (its configured or learnt cap): refused here,
    with no request sent. The sync asks for `cap` blocks instead."""

    def __init__(self, blocks: int, cap: int, provider: str):
        super().__init__(0, f"eth_getLogs over {blocks} blocks: the {provider} provider answers at most {cap}")
        self.cap, self.provider = cap, provider


class ProviderUnavailable(Exception):
    """Every provider of the chain failed or is open."""
