"""Forgetting a discarded local chain's contract actions (and acknowledging its alerts), for `make run`'s fresh
chains.
"""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from backoffice.alerts.services import acknowledge_chain_alerts
from backoffice.audit.services import record_audit
from chain.models import ChainState

# The records of contract actions sent to a chain, with the nonces they used (incident links cascade).
LOCAL_CHAIN_ACTION_TABLES = ("ops_action_signatures", "ops_contract_actions", "ops_signer_nonces")


def forget_local_contract_actions(*, actor: Any) -> int:
    """Development only: drop the contract actions of a local chain that `make run` just replaced (audited).

    A fresh anvil starts every account at nonce 0, so the old actions' signer nonces and Safe nonces
    would make the first new transaction wait forever behind a gap, and their history describes
    transactions that no longer exist. TRUNCATE, because the table refuses row DELETEs by trigger;
    the audit log keeps what happened to them. The old chains' open alerts (a pause, a sync stall) describe
    chains that no longer exist either: they are acknowledged, not deleted; the custody and settings snapshots
    the checks compare with are forgotten. Refused in production.
    """
    if settings.PRODUCTION:
        raise ImproperlyConfigured("Contract actions are a permanent record: never forgotten in production.")
    with transaction.atomic():
        with connection.cursor() as cur:
            # Deferred foreign-key checks still pending in this transaction would make PostgreSQL refuse TRUNCATE.
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute("SELECT count(*) FROM ops_contract_actions")
            (count,) = cur.fetchone()
            cur.execute(f"TRUNCATE {', '.join(LOCAL_CHAIN_ACTION_TABLES)} CASCADE")
        record_audit(actor=actor, action="forget_local_contract_actions", object_type="ops.contractaction",
                     after={"forgotten": count}, reason="a fresh local chain replaced the one they were sent to")
        acknowledge_chain_alerts(actor=actor, chains=list(settings.CHAINS),
                                 reason="a fresh local chain replaced the one the alert was about")
        # The custody and settings checks compare with what they saw last: on the old chain, not this one.
        ChainState.objects.filter(chain__in=list(settings.CHAINS)).update(custody_snapshot=None, contract_settings=None)
    return count
