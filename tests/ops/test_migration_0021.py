"""Migration 0021 closes the duplicate open SafeTx proposals older code let through before it builds the index."""
from __future__ import annotations

import importlib

import pytest
from django.apps import apps
from django.db import connection

from ops.models import ContractAction

pytestmark = pytest.mark.django_db

migration = importlib.import_module("ops.migrations.0021_one_open_action_per_safe_tx")


def safe_action(user, status: str, signing_hash: str = "0x" + "ab" * 32, **extra) -> ContractAction:
    return ContractAction.objects.create(
        chain="bsc", kind="set_platform_fee", params={"bps": 100}, description="setPlatformFeeBps(bps=100)",
        to_address="0x" + "11" * 20, calldata="0x00", calldata_hash="0x" + "00" * 32, reason="drill",
        proposed_by=user, custody="safe", safe_address="0x" + "22" * 20, safe_nonce=7, typed_data={},
        signing_hash=signing_hash, status=status, **extra)


def test_migration_0021_keeps_the_first_open_safetx_and_closes_its_duplicates(staff_user, django_user_model):
    other = django_user_model.objects.create_user("approver", is_staff=True)
    with connection.cursor() as cur:  # the state before 0021 (rolled back with the test)
        cur.execute("DROP INDEX contract_actions_one_open_per_safe_tx")
    first = safe_action(staff_user, "proposed")
    second = safe_action(staff_user, "approved", approved_by=other)
    third = safe_action(staff_user, "proposed")
    unrelated = safe_action(staff_user, "proposed", signing_hash="0x" + "cd" * 32)
    migration.close_duplicates(apps, None)
    statuses = dict(ContractAction.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "proposed", second.pk: "stale", third.pk: "stale", unrelated.pk: "proposed"}
    second.refresh_from_db()
    assert f"action #{first.pk} is the same SafeTx" in second.outcome
    open_hashes = list(ContractAction.objects.filter(status__in=migration.OPEN).values_list("signing_hash", flat=True))
    assert sorted(open_hashes) == sorted(set(open_hashes)), "the index can now be built"
