"""Chain mirror writes staff and tasks trigger: re-sync from a block, and reconciliation against the contract."""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from eth_abi import decode as abi_decode
from eth_utils import keccak

from backoffice.alerts.services import raise_alert
from backoffice.audit.services import record_audit

from .config import get_chain_config
from .mirror import ts, units
from .models import CONTRACT_STATUS, EventSyncCursor, Order, ReconciliationDrift, Token
from .rpc import RpcClient, get_client
from .sync import chain_lock, rollback_to

logger = logging.getLogger(__name__)

ORDERS_SELECTOR = "0x" + keccak(text="orders(uint256)")[:4].hex()
ORDER_TUPLE = ["address", "address", "address", "uint256", "uint256", "address", "uint64", "uint64", "uint64",
               "uint64", "uint8"]
ZERO = "0x" + "0" * 40


def resync_from_block(*, actor: Any, chain: str, block: int, reason: str) -> dict[str, int]:
    """Roll the mirror back so the next sync re-applies every event from `block` on (audited).

    Raises ValidationError naming the field for a bad block or a missing reason, and when a sync
    of this chain is running right now (try again in a few seconds).
    """
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError({"reason": "A reason is required to re-sync a chain."})
    cursor = EventSyncCursor.objects.filter(chain=chain).first()
    if cursor is None:
        raise ValidationError({"chain": f"{chain} has never synced: nothing to re-sync."})
    if not isinstance(block, int) or block < 1:
        raise ValidationError({"block": "The block must be a positive whole number."})
    if block > cursor.last_block + 1:
        raise ValidationError({"block": f"Block {block} is beyond the cursor ({cursor.last_block}): "
                                        "the sync has not reached it yet."})
    with chain_lock(chain) as got:
        if not got:
            raise ValidationError({"chain": f"A sync of {chain} is running: try again in a few seconds."})
        with transaction.atomic():
            before = {"last_block": cursor.last_block}
            summary = rollback_to(chain, block - 1)
            record_audit(actor=actor, action="resync_from_block", obj=cursor, before=before,
                         after={"last_block": block - 1, **summary}, reason=reason)
    return summary


@dataclass
class ReconcileResult:
    chain: str
    at_block: int
    checked: int = 0
    drifted_orders: list[int] = field(default_factory=list)


def _mirror_fields(order: Order, decimals: int) -> dict[str, str]:
    return {
        "buyer": order.buyer_id, "seller": order.seller_id, "token": order.token_address,
        "amount": str(order.amount.normalize()), "platform_fee": str(order.platform_fee.normalize()),
        "arbitrator": order.arbitrator_wallet or ZERO, "status": order.status,
        "created_at": order.created_at.isoformat(),
        "seller_deadline": order.seller_deadline.isoformat() if order.seller_deadline else "",
        "buyer_deadline": order.buyer_deadline.isoformat() if order.buyer_deadline else "",
        "dispute_deadline": order.dispute_deadline.isoformat() if order.dispute_deadline else "",
    }


def _chain_fields(raw: tuple, decimals: int) -> dict[str, str]:
    buyer, seller, token, amount, fee, arbitrator, created, s_dl, b_dl, d_dl, status = raw
    iso = lambda epoch: ts(epoch).isoformat() if epoch else ""  # noqa: E731
    return {
        "buyer": buyer.lower(), "seller": seller.lower(), "token": token.lower(),
        "amount": str(units(amount, decimals).normalize()), "platform_fee": str(units(fee, decimals).normalize()),
        "arbitrator": arbitrator.lower(), "status": CONTRACT_STATUS.get(status, f"unknown({status})"),
        "created_at": iso(created), "seller_deadline": iso(s_dl), "buyer_deadline": iso(b_dl),
        "dispute_deadline": iso(d_dl),
    }


def reconcile_orders(*, chain: str, sample: int | None = 200, client: RpcClient | None = None,
                     seed: int | None = None) -> ReconcileResult:
    """Compare mirrored orders with the contract's `orders(uint256)` at the cursor's block.

    `sample=None` checks every order. Each difference is recorded as a ReconciliationDrift and one
    alert is raised for the chain; drift rows of orders that now agree are marked resolved.
    """
    cfg = get_chain_config(chain)
    client = client or get_client(chain)
    cursor = EventSyncCursor.objects.filter(chain=chain).first()
    if cursor is None:
        # Nothing is mirrored before the first sync run (a fresh deployment): nothing to compare yet.
        return ReconcileResult(chain=chain, at_block=0)
    at_block = cursor.last_block
    ids = list(Order.objects.filter(chain=chain, created_block__lte=at_block).values_list("id", flat=True))
    if sample is not None and len(ids) > sample:
        ids = random.Random(seed).sample(ids, sample)
    decimals = dict(Token.objects.filter(chain=chain).values_list("address", "decimals"))
    result = ReconcileResult(chain=chain, at_block=at_block)
    now = timezone.now()
    for start in range(0, len(ids), 200):
        orders = list(Order.objects.filter(id__in=ids[start:start + 200]))
        calls = [("eth_call", [{"to": cfg.escrow, "data": ORDERS_SELECTOR + f"{o.onchain_id:064x}"}, hex(at_block)])
                 for o in orders]
        answers = client.batch(calls)
        drift_rows = []
        for order, answer in zip(orders, answers, strict=True):
            dec = decimals.get(order.token_address, 18)
            mirror = _mirror_fields(order, dec)
            onchain = _chain_fields(abi_decode(ORDER_TUPLE, bytes.fromhex(answer[2:])), dec)
            diffs = [(k, mirror[k], onchain[k]) for k in mirror if mirror[k] != onchain[k]]
            result.checked += 1
            if diffs:
                result.drifted_orders.append(order.onchain_id)
                drift_rows += [ReconciliationDrift(chain=chain, onchain_id=order.onchain_id, field=k,
                                                   mirror_value=m, chain_value=c, at_block=at_block)
                               for k, m, c in diffs]
        with transaction.atomic():
            agreed = [o.onchain_id for o in orders if o.onchain_id not in result.drifted_orders]
            ReconciliationDrift.objects.filter(chain=chain, onchain_id__in=agreed, resolved_at__isnull=True).update(
                resolved_at=now)
            ReconciliationDrift.objects.bulk_create(drift_rows)
    if result.drifted_orders:
        raise_alert(key=f"reconciliation:{chain}", severity="P1", source="reconcile_orders",
                    title=f"Mirror drift on {chain}: {len(result.drifted_orders)} order(s) differ from the contract",
                    message="Orders " + ", ".join(f"#{i}" for i in result.drifted_orders[:20])
                            + f" differ at block {at_block}. See Chain mirror → Reconciliation drift.")
    logger.info("reconciled %d orders on %s, %d drifted", result.checked, chain, len(result.drifted_orders),
                extra={"chain": chain})
    return result

