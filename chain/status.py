"""The runbook's contract reads (§8) in one batched request, and solvency against the mirror."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from eth_abi import decode as abi_decode
from eth_utils import keccak

from backoffice.durations import human_duration

from .config import get_chain_config
from .fetch import read_token_metadata
from .mirror import units
from .models import OPEN_STATUSES, ChainEvent, Token
from .rpc import ProviderUnavailable, RpcClient, RpcError, get_client


def _selector(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


def _addr_arg(address: str) -> str:
    return address.lower().removeprefix("0x").rjust(64, "0")


@dataclass
class TokenStatus:
    symbol: str
    address: str
    decimals: int
    supported: bool
    escrow_balance: Decimal
    treasury_balance: Decimal
    open_orders_total: Decimal
    escrow_balance_at_cursor: Decimal

    @property
    def solvent(self) -> bool:
        """The escrow must hold at least what its open orders owe (read at the mirror's block)."""
        return self.escrow_balance_at_cursor >= self.open_orders_total

    @property
    def matches(self) -> bool:
        return self.escrow_balance_at_cursor == self.open_orders_total

    @property
    def difference(self) -> Decimal:
        return self.escrow_balance_at_cursor - self.open_orders_total


@dataclass
class ContractStatus:
    chain: str
    ok: bool
    error: str = ""
    block: int | None = None
    cursor_block: int | None = None
    settings_block: int | None = None  # the owner settings and supported tokens were read here (confirmed)
    escrow: str = ""
    paused: bool | None = None
    treasury: str = ""
    arbitrator_pool: str = ""
    next_order_id: int | None = None
    platform_fee_bps: int | None = None
    arbitrator_fee_bps: int | None = None
    timeouts: tuple[int, int, int] | None = None  # seller, buyer, dispute (seconds)
    native_balance: Decimal | None = None  # the escrow never needs the native coin: any is stray
    treasury_is_contract: bool | None = None  # the runbook wants a multisig there
    tokens: list[TokenStatus] = field(default_factory=list)

    @property
    def timeouts_text(self) -> str:
        if not self.timeouts:
            return ""
        return ", ".join(f"{name} {human_duration(seconds)} ({seconds} s)"
                         for name, seconds in zip(("seller", "buyer", "dispute"), self.timeouts, strict=True))

    def owner_settings(self) -> dict:
        """What only the owner changes, as the settings check compares it run after run, with the escrow and the
        block it was read at (a redeployed escrow starts a new record; an older read never replaces a newer)."""
        return {"escrow": self.escrow, "block": self.settings_block, "treasury": self.treasury,
                "arbitrator_pool": self.arbitrator_pool, "platform_fee_bps": self.platform_fee_bps,
                "arbitrator_fee_bps": self.arbitrator_fee_bps,
                "timeouts": list(self.timeouts) if self.timeouts else None,
                "tokens": {t.address: t.supported for t in self.tokens}}

    @property
    def solvent(self) -> bool:
        return all(t.solvent for t in self.tokens)

    @property
    def balanced(self) -> bool:
        return all(t.matches for t in self.tokens)


# (chain, address) → (symbol, decimals) of tokens known only from the owner's SupportedTokenSet events.
_owner_token_metadata: dict[tuple[str, str], tuple[str, int]] = {}

# The escrow's owner-set numbers, read with the runbook's §8 calls (the fee before changing it, 002).
SETTINGS = ("platformFeeBps", "arbitratorFeeBps", "sellerTimeout", "buyerTimeout", "disputeTimeout")


def mirror_at_cursor(chain: str) -> tuple[int | None, dict[str, Decimal]]:
    """The sync cursor's block and the open orders' total per token, in one statement, so one snapshot.

    The sync advances the cursor in the transaction that applies its blocks, so the totals are exactly the
    mirror's state at that block. Read one after the other, a sync committing in between would make the totals
    newer than the block the chain is then asked about: the race that paged a false insolvency.
    """
    with connection.cursor() as cur:
        cur.execute("SELECT c.last_block, t.token_address, t.total FROM (VALUES (1)) AS one (x) "
                    "LEFT JOIN event_sync_cursor c ON c.chain = %s "
                    "LEFT JOIN (SELECT token_address, COALESCE(SUM(amount), 0) AS total FROM orders "
                    "           WHERE chain = %s AND status = ANY(%s) GROUP BY token_address) t ON true",
                    [chain, chain, list(OPEN_STATUSES)])
        rows = cur.fetchall()
    return rows[0][0], {address: total for _, address, total in rows if address is not None}


def read_contract_status(chain: str, *, client: RpcClient | None = None,
                         mirror: tuple[int | None, dict[str, Decimal]] | None = None) -> ContractStatus:
    """The contracts read in two batched requests, with solvency against the mirror: both at the mirror's cursor.

    `client` and `mirror` (a cursor block and the open totals at it) let a drill read a fork of the chain against
    the mirror as it stood when the fork was made (nothing of ours happens on a fork after it)."""
    cfg = get_chain_config(chain)
    status = ContractStatus(chain=chain, ok=False, escrow=cfg.escrow.lower())
    if not cfg.is_configured:
        status.error = "not configured"
        return status
    client = client or get_client(chain)
    # Both sides at one block: the mirror as of its cursor (one snapshot), and the chain asked at that block.
    cursor_block, totals = mirror if mirror is not None else mirror_at_cursor(chain)
    tokens = {t.address: t for t in Token.objects.filter(chain=chain)}
    for symbol, address in cfg.tokens.items():
        tokens.setdefault(address.lower(), Token(chain=chain, address=address.lower(), symbol=symbol, decimals=18))
    # Every token the owner ever set (supported or not): one no order used yet is still read, so a token
    # supported outside the back office shows here and in the settings watch.
    for address in set(ChainEvent.objects.owner_events(chain).filter(event="SupportedTokenSet")
                       .values_list("args__token", flat=True)) - set(tokens):
        if isinstance(address, str):
            key = (chain, address.lower())
            if key not in _owner_token_metadata:  # read once per process: it never changes, and a non-token logs
                _owner_token_metadata[key] = read_token_metadata(client, address)
            symbol, decimals = _owner_token_metadata[key]
            tokens[address.lower()] = Token(chain=chain, address=address.lower(), symbol=symbol, decimals=decimals)
    esc = cfg.escrow
    try:
        block = client.block_number()
        at_cursor = hex(min(cursor_block, block)) if cursor_block else hex(block)
        # The owner's settings are read at confirmation depth: a watch that pages on a change must not see one a
        # reorg takes back. Whether it is paused is read at the head (what trading meets now).
        settled = max(block - cfg.confirmations, 0)
        at_settled = hex(settled)
        base = [
            ("eth_call", [{"to": esc, "data": _selector("paused()")}, hex(block)]),
            ("eth_call", [{"to": esc, "data": _selector("treasury()")}, at_settled]),
            ("eth_call", [{"to": esc, "data": _selector("arbitratorPool()")}, at_settled]),
            ("eth_call", [{"to": esc, "data": _selector("nextOrderId()")}, hex(block)]),
            *[("eth_call", [{"to": esc, "data": _selector(f"{name}()")}, at_settled]) for name in SETTINGS],
            ("eth_getBalance", [esc, hex(block)]),
        ]
        answers = client.batch(base)
        status.paused = abi_decode(["bool"], bytes.fromhex(answers[0][2:]))[0]
        status.treasury = abi_decode(["address"], bytes.fromhex(answers[1][2:]))[0].lower()
        status.arbitrator_pool = abi_decode(["address"], bytes.fromhex(answers[2][2:]))[0].lower()
        status.next_order_id = abi_decode(["uint256"], bytes.fromhex(answers[3][2:]))[0]
        fee, arbitrator_fee, *timeouts = (int(a, 16) for a in answers[4:4 + len(SETTINGS)])
        status.platform_fee_bps, status.arbitrator_fee_bps, status.timeouts = fee, arbitrator_fee, tuple(timeouts)
        status.native_balance = units(int(answers[-1], 16), 18)
        per_token = [("eth_getCode", [status.treasury, hex(block)])]  # in the same round trip as the tokens
        balance_of = _selector("balanceOf(address)")
        for address in tokens:
            per_token += [
                ("eth_call", [{"to": esc, "data": _selector("supportedTokens(address)") + _addr_arg(address)},
                              at_settled]),
                ("eth_call", [{"to": address, "data": balance_of + _addr_arg(esc)}, hex(block)]),
                ("eth_call", [{"to": address, "data": balance_of + _addr_arg(status.treasury)}, hex(block)]),
                ("eth_call", [{"to": address, "data": balance_of + _addr_arg(esc)}, at_cursor]),
            ]
        code, *results = client.batch(per_token)
        status.treasury_is_contract = code not in ("0x", "0x0", "")
    except (ProviderUnavailable, RpcError) as exc:
        status.error = str(exc)
        return status
    for i, (address, token) in enumerate(tokens.items()):
        # "0x": no code at that address yet (a token deployed after the mirror's block) reads as zero.
        supported, esc_bal, tre_bal, esc_cursor = (int(r, 16) if r not in ("0x", "") else 0
                                                   for r in results[4 * i: 4 * i + 4])
        status.tokens.append(TokenStatus(
            symbol=token.symbol, address=address, decimals=token.decimals, supported=bool(supported),
            escrow_balance=units(esc_bal, token.decimals), treasury_balance=units(tre_bal, token.decimals),
            open_orders_total=totals.get(address, Decimal(0)),
            escrow_balance_at_cursor=units(esc_cursor, token.decimals)))
    status.ok, status.block, status.settings_block = True, block, settled
    status.cursor_block = cursor_block
    return status
