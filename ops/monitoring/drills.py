"""The pause drill: RB-05's automatic path rehearsed on a fork of the chain, never on the chain itself.

The chain is forked at the mirror's cursor (so the mirror, read in one snapshot then, is exactly the fork's state:
nothing of ours happens on a fork after it), mining at the chain's block time. The escrow's largest token balance is
cut to a tenth there (anvil_setStorageAt), the back office's solvency read (`read_contract_status`, pointed at the
fork and that mirror) runs at each new block with the live check's two-observation rule (`solvency_rule`), and once
it is confirmed the pause the automatic pause would send (`pause_route`: its target, calldata and key) is sent to
the fork. Kept: the blocks and seconds from the drain to the confirmation and to paused(), each step with its time.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from backoffice.alerts.services import raise_alert, settle_alerts
from backoffice.audit.services import record_audit
from backoffice.permissions import require_perm
from backoffice.tasking import send_task
from chain import drill, transactions
from chain.config import configured_chains, get_chain_config
from chain.fork import ForkUnavailable, forked
from chain.rpc import ProviderUnavailable, RpcError
from chain.status import mirror_at_cursor, read_contract_status
from ops.actions import autopause
from ops.models import DrillRun, DrillStatus

from .checks.contracts import solvency_rule

logger = logging.getLogger(__name__)

DRILL_MAX_AGE_DAYS = 30
TIMEOUT_SECONDS = 180.0


def _step(run: DrillRun, started: float, text: str) -> None:
    run.steps.append({"at": timezone.now().isoformat(timespec="milliseconds"),
                      "seconds": round(time.monotonic() - started, 2), "text": text})
    logger.info("pause drill #%s: %s", run.pk, text, extra={"chain": run.chain})


def _largest_holding(totals: dict[str, Decimal], tokens: dict[str, str]) -> str:
    """The token the escrow owes most of (by its open orders), or the first configured one on an empty market."""
    if totals:
        return max(totals, key=lambda address: totals[address])
    return next(iter(tokens.values())).lower()


def run_pause_drill(*, actor: Any, chain: str, timeout: float = TIMEOUT_SECONDS) -> DrillRun:
    """Rehearse the automatic pause of `chain` on a fork (ops admins, or the schedule; audited). Returns the run:
    passed with its figures, or failed with the reason; a failed drill raises a P2 (`check_pause_drills` also
    raises one when the last passed drill is older than 30 days)."""
    require_perm(actor, "ops.run_drillrun", "run a pause drill")
    cfg = get_chain_config(chain)
    label = actor if isinstance(actor, str) else actor.get_username()
    with transaction.atomic():
        run = DrillRun.objects.create(chain=chain, actor_label=label, started_at=timezone.now())
        record_audit(actor=actor, action="run_pause_drill", obj=run, after={"chain": chain})
    started = time.monotonic()
    try:
        _drill(run, cfg, started, timeout)
    except Exception as exc:  # whatever stopped it (a key that does not decrypt too), the drill failed: kept, a P2
        if not isinstance(exc, (ForkUnavailable, ProviderUnavailable, RpcError, ValueError, TimeoutError)):
            logger.exception("pause drill #%s of %s failed", run.pk, chain, extra={"chain": chain})
        run.status, run.error = DrillStatus.FAILED, str(exc)[:2000]
        _step(run, started, f"failed: {exc}")
    run.finished_at = timezone.now()
    run.save()
    if run.status == DrillStatus.FAILED:
        raise_alert(key=f"pause-drill:{chain}", severity="P2", source="pause_drill",
                    title=f"{chain}: the pause drill failed", message=f"Drill #{run.pk}: {run.error}")
    else:
        settle_alerts(source="pause_drill", scope=[f"pause-drill:{chain}"], raised=[])
    return run


def _drill(run: DrillRun, cfg, started: float, timeout: float) -> None:
    if not cfg.is_configured:
        raise ValueError(f"{cfg.key} is not configured: nothing to fork.")
    cursor, totals = mirror_at_cursor(cfg.key)
    if cursor is None:
        raise ValueError(f"{cfg.key} has no sync cursor yet: let the sync run once, then drill.")
    run.fork_block = cursor
    _step(run, started, f"forking {cfg.key} at block {cursor} (the mirror's cursor) with {cfg.block_time:g} s blocks")
    with forked(cfg.key, rpc_url=cfg.rpc_url, block=cursor, block_time=cfg.block_time) as client:
        token = _largest_holding(totals, cfg.tokens)
        held = drill._balance(client, token, cfg.escrow)
        run.drain_block = drill.set_token_balance(client, token=token, holder=cfg.escrow, amount=held // 10)
        drained_at = time.monotonic()
        _step(run, started, f"drained: the escrow's {token} balance cut from {held} to {held // 10} at block "
                            f"{run.drain_block}")
        mirror = (cursor, totals)
        short_since, last = None, run.drain_block - 1
        while run.detected_block is None:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"no confirmed insolvency within {timeout:g} s of the drain")
            head = client.block_number()
            if head <= last:
                time.sleep(min(cfg.block_time, 0.25) / 2)
                continue
            last = head
            # Nothing of ours happens on the fork: the mirror at its cursor is the mirror at every fork block.
            status = read_contract_status(cfg.key, client=client, mirror=(head, mirror[1]))
            if not status.ok:
                raise ValueError(f"the contracts could not be read on the fork: {status.error}")
            short_since, seen = solvency_rule(short_since, head, solvent=status.solvent)
            if seen == "observed":
                _step(run, started, f"block {head}: escrow short of its open orders, seen once (an observation)")
            elif seen == "confirmed":
                run.detected_block = head
                _step(run, started, f"block {head}: short again, confirmed: the P0 and the automatic pause")
        tx, who = drill.send_pause(client, chain_id=cfg.chain_id, escrow=cfg.escrow,
                                   module=cfg.guardian_module if cfg.is_safe else "", route=_pause_route(run, cfg,
                                                                                                          started))
        _step(run, started, f"pause sent by {who}: {tx}")
        while not drill.paused(client, cfg.escrow):
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"the pause {tx} was not mined within {timeout:g} s of the drain")
            time.sleep(0.05)
        receipt = client.call("eth_getTransactionReceipt", [tx])
        run.paused_block = int(receipt["blockNumber"], 16)
        run.pause_seconds = round(time.monotonic() - drained_at, 2)
        run.detect_blocks = run.detected_block - run.drain_block
        run.pause_blocks = run.paused_block - run.drain_block
        run.status = DrillStatus.PASSED
        _step(run, started, f"paused() true on the fork at block {run.paused_block}: {run.pause_blocks} blocks, "
                            f"{run.pause_seconds:g} s after the drain")


def _pause_route(run: DrillRun, cfg, started: float) -> tuple[str, str, str] | None:
    """The automatic pause's own route (ops.actions.autopause.pause_route: the module or escrow, the calldata, the
    key). None only when this server holds no key to pause with (the drill then says so and impersonates); any
    other refusal (no guardian module, the Safe unreadable) fails the drill, as it would stop the real pause."""
    role = "guardian" if cfg.is_safe else "owner"
    if not transactions.has_key(role):
        _step(run, started, f"this server holds no {role} key: the automatic pause could not send on the chain "
                            f"itself ({'GUARDIAN_KEY' if cfg.is_safe else 'OWNER_KEY'}); the drill impersonates")
        return None
    try:
        _custody, to, data, _safe = autopause.pause_route(cfg.key)  # the guardian key's route exactly when safe
    except ValidationError as exc:
        raise ValueError("the automatic pause could not send: " + "; ".join(exc.messages)) from None
    return to, data, role


def request_pause_drill(*, actor: Any, chain: str) -> None:
    """The ops admins' button: checked and audited here, run by a worker (a drill takes up to a few minutes)."""
    require_perm(actor, "ops.run_drillrun", "run a pause drill", allow_system=False)
    cfg = get_chain_config(chain)
    if not cfg.is_configured:
        raise ValidationError({"chain": f"{chain} is not configured: nothing to fork."})
    with transaction.atomic():
        record_audit(actor=actor, action="request_pause_drill", object_type="chain", object_id=chain,
                     after={"chain": chain})
        transaction.on_commit(lambda: send_task("ops.tasks.run_pause_drill", chain=chain,
                                                actor=f"{actor.get_username()} (button)"))


def check_pause_drills() -> list[str]:
    """Daily: a chain whose automatic pause is on and whose last passed drill is older than 30 days (or that never
    passed one) raises a P2; a passed drill clears it."""
    raised = []
    for chain in [cfg for cfg in map(get_chain_config, configured_chains()) if cfg.auto_pause]:
        last = DrillRun.objects.passed().filter(chain=chain.key).order_by("-started_at").first()
        if last is None or timezone.now() - last.started_at > timedelta(days=DRILL_MAX_AGE_DAYS):
            key = f"pause-drill-old:{chain.key}"
            raise_alert(key=key, severity="P2", source="check_pause_drills",
                        title=f"{chain.key}: no passed pause drill in {DRILL_MAX_AGE_DAYS} days",
                        message=("Never drilled" if last is None else f"Last passed {last.started_at:%Y-%m-%d}")
                                + f": run `manage.py pause_drill --chain {chain.key}` (or Operations → Pause drills).")
            raised.append(key)
    settle_alerts(source="check_pause_drills", scope=["pause-drill-old"], raised=raised)
    return raised
