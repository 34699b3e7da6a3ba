"""Drain an escrow on a disposable node (a local anvil, or an anvil fork of the real chain): the pause drill's and
the tests' way to make a real insolvency without touching the chain the back office watches."""
from __future__ import annotations

from eth_abi import encode as abi_encode
from eth_utils import keccak

from .rpc import RpcClient

BALANCE_OF = "0x70a08231"
MAX_SLOT = 64  # ERC-20s keep their balances mapping in one of the first slots (OpenZeppelin: 0; USDT: 2)


def _balance(client: RpcClient, token: str, holder: str) -> int:
    answer = client.call("eth_call", [{"to": token, "data": BALANCE_OF + holder.lower()[2:].rjust(64, "0")},
                                      "latest"])
    return int(answer, 16) if answer not in ("0x", "") else 0


def balance_slot(client: RpcClient, token: str, holder: str) -> str:
    """The storage slot of `holder`'s balance in `token`, found as forge-std's `deal` finds it: write a marker into
    the candidate slot of each mapping position and see whether balanceOf answers it (then put the value back)."""
    marker = 0x5EED_DEAD_BEEF
    for position in range(MAX_SLOT):
        slot = "0x" + keccak(abi_encode(["address", "uint256"], [holder, position])).hex()
        before = client.call("eth_getStorageAt", [token, slot, "latest"])
        client.call("anvil_setStorageAt", [token, slot, "0x" + f"{marker:064x}"])
        found = _balance(client, token, holder) == marker
        client.call("anvil_setStorageAt", [token, slot, "0x" + int(before, 16).to_bytes(32, "big").hex()])
        if found:
            return slot
    raise ValueError(f"the balances mapping of {token} is not in its first {MAX_SLOT} slots: it cannot be drained "
                     "by a storage write")


def set_token_balance(client: RpcClient, *, token: str, holder: str, amount: int) -> int:
    """Overwrite `holder`'s balance of `token` (anvil_setStorageAt) and mine a block holding the change; returns
    that block's number. Only on an anvil (a local node or a fork): a real node refuses the method."""
    slot = balance_slot(client, token, holder)
    client.call("anvil_setStorageAt", [token, slot, "0x" + amount.to_bytes(32, "big").hex()])
    client.call("evm_mine", [])
    return int(client.call("eth_blockNumber", []), 16)


PAUSE = "0x8456cb59"  # pause(): the escrow's and the guardian module's alike
GUARDIANS = "0x" + keccak(text="guardians()")[:4].hex()
OWNER = "0x" + keccak(text="owner()")[:4].hex()


def paused(client: RpcClient, escrow: str) -> bool:
    return int(client.call("eth_call", [{"to": escrow, "data": "0x5c975abb"}, "latest"]), 16) != 0


def send_pause(client: RpcClient, *, chain_id: int, escrow: str, module: str = "",
               route: tuple[str, str, str] | None = None) -> tuple[str, str]:
    """On a fork, the pause the automatic pause sends: `route` is its (to, data, key role), as the automatic pause
    builds it (the guardian module's pause() from the server's guardian key in safe custody, the escrow's from the
    owner key in eoa), signed with that key. Without a route (no such key on this server) the drill impersonates the
    module's first guardian (or the escrow's owner), and says so. Returns (transaction hash, who sent it)."""
    from eth_abi import decode as abi_decode

    from . import transactions

    if route is not None:
        to, data, role = route
        sender = transactions.signer_address(role)
        nonce = int(client.call("eth_getTransactionCount", [sender, "pending"]), 16)
        gas = int(client.call("eth_estimateGas", [{"from": sender, "to": to, "data": data}]), 16)
        base = int(client.call("eth_getBlockByNumber", ["latest", False]).get("baseFeePerGas", "0x0"), 16)
        signed = transactions.sign(chain_id=chain_id, to=to, data=data, nonce=nonce, gas=int(gas * 1.25) + 10_000,
                                   max_fee=2 * base + 10**9, priority_fee=10**9, role=role)
        return client.call("eth_sendRawTransaction", [signed.raw]), f"the server's {role} key {sender}"
    to = module or escrow
    if module:
        sender = abi_decode(["address[]"], bytes.fromhex(client.call("eth_call", [{"to": module, "data": GUARDIANS},
                                                                                  "latest"])[2:]))[0][0]
    else:
        sender = abi_decode(["address"], bytes.fromhex(client.call("eth_call", [{"to": escrow, "data": OWNER},
                                                                                "latest"])[2:]))[0]
    client.call("anvil_impersonateAccount", [sender])
    client.call("anvil_setBalance", [sender, hex(10**20)])
    tx = client.call("eth_sendTransaction", [{"from": sender, "to": to, "data": PAUSE}])
    return tx, f"an impersonated {'guardian' if module else 'owner'} {sender.lower()} (no key to pause with here)"
