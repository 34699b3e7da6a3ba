"""The custody check on a real anvil: what moves the Safe outside the back office (owners, threshold, modules,
guard, fallback handler) raises a P1, and a module or guard the back office does not know is named at every
check."""
from __future__ import annotations

import pytest
from web3 import Web3

from backoffice.alerts.models import Alert
from chain import safe as chain_safe
from chain.models import ChainState
from ops.monitoring.checks import custody as custody_checks

from .custody_fixtures import *  # noqa: F403 - fixtures

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

STRANGER = Web3.to_checksum_address("0x" + "5e" * 20)


def open_alert(key: str) -> Alert | None:
    return Alert.objects.filter(key=key, acknowledged_at__isnull=True).first()


def seen_twice(safe_chain) -> list[str]:
    """A custody change pages only when it still holds at a read `confirmations` blocks later (here 0: the next)."""
    first = custody_checks.check_custody()
    assert "custody-changed:bsc" not in first and "custody-observed:bsc" in first, "seen once: an observation"
    safe_chain.rpc("evm_mine", [])
    return custody_checks.check_custody()


def test_custody_check_records_first_then_names_an_owner_added_outside(safe_chain):
    assert custody_checks.check_custody() == [] and open_alert("custody-changed:bsc") is None
    snapshot = ChainState.objects.get(chain="bsc").custody_snapshot
    assert snapshot["modules"] == [safe_chain.module.address.lower()] and snapshot["threshold"] == 2
    safe_chain.exec_as_owners(safe_chain.safe.functions.addOwnerWithThreshold(STRANGER, 2))
    assert "custody-changed:bsc" in seen_twice(safe_chain)
    alert = open_alert("custody-changed:bsc")
    assert alert.severity == "P1" and STRANGER.lower() in alert.message and "owners" in alert.message


def test_custody_check_names_a_module_enabled_outside_at_every_check(safe_chain):
    custody_checks.check_custody()
    safe_chain.exec_as_owners(safe_chain.safe.functions.enableModule(STRANGER))
    state = chain_safe.read_safe("bsc", safe_chain.safe.address)
    assert set(state.modules) == {STRANGER.lower(), safe_chain.module.address.lower()}
    raised = seen_twice(safe_chain)
    assert {"custody-changed:bsc", "custody-mismatch:bsc"} <= set(raised)
    mismatch = open_alert("custody-mismatch:bsc")
    assert mismatch.severity == "P1" and STRANGER.lower() in mismatch.message and "disableModule" in mismatch.message
    assert safe_chain.module.address.lower() not in mismatch.message, "the guardian module is known"
    mismatch.acknowledged_at = mismatch.created_at
    mismatch.save(update_fields=["acknowledged_at"])
    assert custody_checks.check_custody() == ["custody-mismatch:bsc"], (
        "no change any more, but the module is still there")


def test_custody_check_names_a_guard_and_a_changed_fallback_handler(safe_chain):
    custody_checks.check_custody()
    # setGuard wants a contract answering ERC-165; what the check reads is the Safe's guard slot, so it is written
    # there as setGuard would.
    for slot in (chain_safe.GUARD_SLOT, chain_safe.FALLBACK_HANDLER_SLOT):
        safe_chain.rpc("anvil_setStorageAt",
                       [safe_chain.safe.address, slot, "0x" + STRANGER[2:].lower().rjust(64, "0")])
    raised = seen_twice(safe_chain)
    assert {"custody-changed:bsc", "custody-mismatch:bsc"} <= set(raised)
    changed = open_alert("custody-changed:bsc").message
    assert f"guard: {chain_safe.ZERO_ADDRESS} → {STRANGER.lower()}" in changed
    assert f"fallback_handler: {chain_safe.ZERO_ADDRESS} → {STRANGER.lower()}" in changed
    assert "transaction guard" in open_alert("custody-mismatch:bsc").message


def test_custody_mismatch_alert_names_every_problem_at_once(safe_chain):
    """A module and a guard together: one alert holding both (one key per chain keeps only its last message)."""
    module = Web3.to_checksum_address("0x" + "4d" * 20)
    safe_chain.exec_as_owners(safe_chain.safe.functions.enableModule(module))
    safe_chain.rpc("anvil_setStorageAt", [safe_chain.safe.address, chain_safe.GUARD_SLOT,
                                          "0x" + STRANGER[2:].lower().rjust(64, "0")])
    custody_checks.check_custody()
    message = open_alert("custody-mismatch:bsc").message
    assert module.lower() in message and "disableModule" in message
    assert f"transaction guard {STRANGER.lower()}" in message


def test_custody_check_leaves_modules_and_guard_the_owners_declared(safe_chain, settings):
    safe_chain.exec_as_owners(safe_chain.safe.functions.enableModule(STRANGER))
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "safe_known_modules": [STRANGER.lower()]}}
    assert "custody-mismatch:bsc" not in custody_checks.check_custody()


def test_custody_check_after_an_upgrade_takes_new_fields_as_recorded_not_changed(safe_chain):
    custody_checks.check_custody()
    state = ChainState.objects.get(chain="bsc")
    old = {k: v for k, v in state.custody_snapshot.items() if k not in ("modules", "guard", "fallback_handler")}
    ChainState.objects.filter(pk=state.pk).update(custody_snapshot=old)
    assert custody_checks.check_custody() == [] and open_alert("custody-changed:bsc") is None
    assert "modules" in ChainState.objects.get(chain="bsc").custody_snapshot


def test_contract_status_page_lists_the_safes_modules_guard_and_handler(safe_chain, staff, client):
    from django.urls import reverse

    safe_chain.exec_as_owners(safe_chain.safe.functions.enableModule(STRANGER))
    client.force_login(staff["alice"])
    page = client.get(reverse("admin:ops_contractaction_status", args=["bsc"])).content.decode()
    assert f"<code>{safe_chain.module.address.lower()}</code> (the guardian module)" in page
    assert f"<code>{STRANGER.lower()}</code>" in page and "disableModule" in page
    assert f"<code>{chain_safe.ZERO_ADDRESS}</code> (none)" in page


def test_custody_check_names_a_threshold_of_one_and_a_disabled_guardian_module(safe_chain):
    safe_chain.exec_as_owners(safe_chain.safe.functions.changeThreshold(1))
    safe_chain.exec_as_owners(safe_chain.safe.functions.disableModule(chain_safe.SENTINEL, safe_chain.module.address))
    assert "custody-mismatch:bsc" in custody_checks.check_custody()
    message = open_alert("custody-mismatch:bsc").message
    assert "needs 1 signature of 3: one owner acts alone" in message and "changeThreshold" in message
    assert f"the guardian module {safe_chain.module.address.lower()} is not enabled" in message
