"""make run's fresh local chains: the old chains' contract actions and nonces are forgotten, never in production."""
from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import DatabaseError, transaction

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from ops.models import ContractAction, SignerNonce
from ops.services import forget_local_contract_actions
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


def test_forget_local_actions_is_refused_in_production(old_action, settings):
    settings.PRODUCTION = True
    with pytest.raises(ImproperlyConfigured, match="never forgotten in production"):
        forget_local_contract_actions(actor="system:make-run")
    assert ContractAction.objects.filter(pk=old_action.pk).exists()
