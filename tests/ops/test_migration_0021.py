"""Migration 0021 closes the duplicate open SafeTx proposals older code let through before it builds the index."""
from __future__ import annotations

import importlib

import pytest
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from ops.models import ActionSignature, ContractAction

pytestmark = pytest.mark.django_db

migration = importlib.import_module("ops.migrations.0021_one_open_action_per_safe_tx")


@pytest.fixture
def before_0021():
    """The models as 0021 sees them, on a schema without its index (dropped, and restored by the rollback)."""
    with connection.cursor() as cur:
        cur.execute("DROP INDEX contract_actions_one_open_per_safe_tx")
    return MigrationLoader(connection).project_state(("ops", "0020_chains_from_configuration")).apps


def safe_action(user, status: str, signing_hash: str = "0x" + "ab" * 32, **extra) -> ContractAction:
    return ContractAction.objects.create(
        chain="bsc", kind="set_platform_fee", params={"bps": 100}, description="setPlatformFeeBps(bps=100)",
        to_address="0x" + "11" * 20, calldata="0x00", calldata_hash="0x" + "00" * 32, reason="drill",
        proposed_by=user, custody="safe", safe_address="0x" + "22" * 20, safe_nonce=7, typed_data={},
        signing_hash=signing_hash, status=status, **extra)


def signed_by(action: ContractAction, user, n: int) -> None:
    ActionSignature.objects.create(action=action, signer_address="0x" + f"{n:02x}" * 20, signature="0x" + "00" * 65,
                                   signed_by=user)


def test_migration_0021_keeps_the_signed_duplicate_open_and_rejects_the_others(before_0021, staff_user,
                                                                             django_user_model):
    other = django_user_model.objects.create_user("approver", is_staff=True)
    first = safe_action(staff_user, "proposed")
    signed = safe_action(staff_user, "approved", approved_by=other)
    signed_by(signed, staff_user, 1)
    signed_by(signed, other, 2)
    third = safe_action(staff_user, "proposed")
    signed_by(third, staff_user, 1)
    unrelated = safe_action(staff_user, "proposed", signing_hash="0x" + "cd" * 32)
    migration.close_duplicates(before_0021, None)
    statuses = dict(ContractAction.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "rejected", signed.pk: "approved", third.pk: "rejected", unrelated.pk: "proposed"}
    first.refresh_from_db()
    assert f"action #{signed.pk} is the same SafeTx" in first.outcome
    open_hashes = list(ContractAction.objects.filter(status__in=migration.OPEN).values_list("signing_hash", flat=True))
    assert sorted(open_hashes) == sorted(set(open_hashes)), "the index can now be built"


def test_migration_0021_among_proposed_duplicates_keeps_the_one_holding_most_signatures(before_0021, staff_user):
    first = safe_action(staff_user, "proposed")
    second = safe_action(staff_user, "proposed")
    signed_by(second, staff_user, 1)
    migration.close_duplicates(before_0021, None)
    assert dict(ContractAction.objects.values_list("pk", "status")) == {first.pk: "rejected", second.pk: "proposed"}
