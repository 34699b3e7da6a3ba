"""make run's fresh local chains: the old chains' contract actions and nonces are forgotten, never in production."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import DatabaseError, transaction

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from ops.actions.local import forget_local_contract_actions
from ops.models import ContractAction, SignerNonce
from tests import factories as f

pytestmark = pytest.mark.django_db


@pytest.fixture
def old_action(staff_user):
    action = ContractAction.objects.create(chain="bsc", kind="pause", description="pause()", to_address=f.wallet(),
                                           calldata="0x8456cb59", calldata_hash=f.tx_hash(), reason="old chain",
                                           proposed_by=staff_user, status="rejected")
    SignerNonce.objects.create(chain="bsc", address=f.wallet(), next_nonce=7)
    return action


def test_contract_actions_refuse_a_row_delete(old_action):
    with pytest.raises(DatabaseError, match="DELETE is not allowed"), transaction.atomic():
        ContractAction.objects.filter(pk=old_action.pk).delete()


def test_forget_local_actions_empties_actions_and_nonces_and_audits_it(old_action):
    call_command("forget_local_actions")
    assert not ContractAction.objects.exists() and not SignerNonce.objects.exists()
    row = AuditLog.objects.get(action="forget_local_contract_actions")
    assert row.after == {"forgotten": 1} and row.actor_label == "system:make-run"
    assert verify_audit_chain().ok


def test_forget_local_actions_acknowledges_the_old_chains_alerts_only(old_action):
    from backoffice.alerts.models import Alert
    from backoffice.alerts.services import raise_alert

    paused = raise_alert(key="contract-paused:ethereum", severity="P0", title="ethereum escrow is PAUSED",
                         source="check_contracts")
    gas = raise_alert(key="gas-low:bsc:relayer", severity="P2", title="relayer gas low", source="check_custody")
    backup = raise_alert(key="backup-failed", severity="P2", title="backup failed", source="backup_database")
    other = raise_alert(key="secret-overdue:bsc-rpc", severity="P2", title="overdue", source="check_secret_rotations")
    call_command("forget_local_actions")
    open_keys = set(Alert.objects.filter(acknowledged_at__isnull=True).values_list("key", flat=True))
    assert open_keys == {backup.key, other.key}, "only alerts about a chain are the old chain's"
    for alert in (paused, gas):
        alert.refresh_from_db()
        assert alert.acknowledged_at is not None and alert.acknowledged_by is None
    rows = AuditLog.objects.filter(action="acknowledge_alert").order_by("pk")
    assert [r.after["key"] for r in rows] == [paused.key, gas.key]
    assert all(r.actor_label == "system:make-run" and "fresh local chain" in r.reason for r in rows)
    assert verify_audit_chain().ok


def test_forget_local_actions_is_refused_in_production(old_action, settings):
    settings.PRODUCTION = True
    with pytest.raises(ImproperlyConfigured, match="never forgotten in production"):
        forget_local_contract_actions(actor="system:make-run")
    assert ContractAction.objects.filter(pk=old_action.pk).exists()


def test_forget_local_actions_forgets_the_old_chains_custody_and_settings_snapshots(old_action):
    from chain.models import ChainState

    ChainState.objects.create(chain="bsc", custody_snapshot={"owner": "0x" + "11" * 20},
                              contract_settings={"platform_fee_bps": 100})
    call_command("forget_local_actions")
    state = ChainState.objects.get(chain="bsc")
    assert state.custody_snapshot is None and state.contract_settings is None, "the new chain's first check records"

