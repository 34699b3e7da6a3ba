"""Alarms that can be acted on, and the first response that does not wait for a person, on a real anvil: both sides of
every chain-versus-mirror comparison read at one block (a sync committing between the reads pages nothing), a
finding pages only when it holds again at a later block, and a certain one pauses the chain through the guardian
module with the server's guardian key, exactly once, audited, with its P0 and its incident."""
from __future__ import annotations

import pytest
from web3 import Web3

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from backoffice.devservices import DEMO_SAFE_OWNERS, GUARDIAN_INDEX, anvil_key
from chain import drill, status, transactions
from chain.models import ChainState
from chain.rpc import RpcClient
from chain.sync import sync_chain
from ops.actions import autopause
from ops.models import ActionStatus, ContractAction, Incident
from ops.monitoring.checks import contracts as contract_checks
from ops.monitoring.checks.certain import check_chain_now

from .custody_fixtures import *  # noqa: F403 - fixtures
from .test_safe import confirm

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


def node_client(node) -> RpcClient:
    return RpcClient("bsc", [("primary", node.url)])


def drain(node, symbol: str = "USDT", keep: int = 10) -> int:
    """Cut the escrow's balance of `symbol` to 1/keep of itself, in a block of its own (a storage write)."""
    token = node.tokens[symbol].address
    held = node.balance(symbol, node.escrow.address)
    return drill.set_token_balance(node_client(node), token=token, holder=node.escrow.address, amount=held // keep)


def escrow_alerts() -> set[str]:
    return set(Alert.objects.filter(key__startswith="escrow-").values_list("key", flat=True))


def pages() -> list[Alert]:
    return list(Alert.objects.filter(severity__in=["P0", "P1"]))


def test_solvency_a_sync_committing_between_the_reads_pages_nothing(chain, monkeypatch):
    """Today's race: the mirror's totals read after a sync committed newer orders than the block the chain was asked
    at made a healthy escrow look short (a false P0). Both sides now come from one block."""
    chain.create_order()
    sync_chain("bsc")
    newer = [chain.create_order(amount=479 * 10**18, symbol="USDC") for _ in range(2)]  # funded after the cursor
    real_get_client, raced = status.get_client, []

    class SyncsDuringTheChainRead:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def batch(self, calls):
            if not raced:  # the sync commits while the check is reading the chain
                raced.append(sync_chain("bsc").to_block)
            return self.client.batch(calls)

    monkeypatch.setattr(status, "get_client", lambda chain_name: SyncsDuringTheChainRead(real_get_client(chain_name)))
    raised = contract_checks.check_contracts()
    assert raced and raced[0] is not None, "the sync did apply the newer orders during the check"
    assert escrow_alerts() == set() and not [k for k in raised if k.startswith("escrow")]
    assert len(newer) == 2


def test_solvency_a_provider_behind_the_mirrors_cursor_decides_nothing(chain, monkeypatch):
    """A lagging provider (a fallback some blocks behind) cannot answer at the mirror's cursor: asked at its own
    head, it would compare orders the mirror holds with balances from before they were funded, a P0 by the second
    sync. Such a read decides nothing."""
    real_get_client = status.get_client

    class OneBlockBehind:
        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def block_number(self):
            return self.client.block_number() - 1

    monkeypatch.setattr(status, "get_client", lambda chain_name: OneBlockBehind(real_get_client(chain_name)))
    for _ in range(2):
        chain.create_order()  # funded in the newest block, which the lagging provider has not seen
        sync_chain("bsc")
        contract_checks.check_contracts()
        assert escrow_alerts() == set() and pages() == []


def test_solvency_short_once_is_an_observation_and_pages_only_at_a_later_block(chain):
    chain.create_order()
    sync_chain("bsc")
    drain(chain)
    sync_chain("bsc")
    assert contract_checks.check_contracts() == ["escrow-short-observed:bsc"]
    observed = Alert.objects.get(key="escrow-short-observed:bsc")
    assert observed.severity == "P3" and "USDT short" in observed.message and pages() == []
    assert contract_checks.check_contracts() == ["escrow-short-observed:bsc"], "the same block again: no page"
    chain.mine()
    sync_chain("bsc")
    assert "escrow-insolvent:bsc" in contract_checks.check_contracts()
    page = Alert.objects.get(key="escrow-insolvent:bsc")
    assert page.severity == "P0" and "already at block" in page.message


def test_solvency_a_reorg_inside_the_confirmation_window_pages_nothing(local_chain, chain, settings, tmp_path):
    import json

    deployment = json.loads(local_chain.path.read_text())
    deployment["bsc"]["confirmations"] = 3
    path = tmp_path / "deployment.json"
    path.write_text(json.dumps(deployment))
    settings.CHAIN_DEPLOYMENT_FILE = path
    chain.create_order()
    chain.mine(4)
    sync_chain("bsc")
    assert contract_checks.check_contracts() == []
    snapshot = chain.snapshot()
    # The drain is a transaction in the last blocks, inside the confirmation window: the mirror's cursor and every
    # read stop 3 blocks below the head.
    chain.rpc("anvil_impersonateAccount", [chain.escrow.address])
    chain.rpc("anvil_setBalance", [chain.escrow.address, hex(10**18)])
    chain.send(chain.tokens["USDT"].functions.transfer(chain.accounts[30], 900 * 10**18), chain.escrow.address)
    chain.rpc("anvil_stopImpersonatingAccount", [chain.escrow.address])
    for _ in range(2):
        chain.mine()
        sync_chain("bsc")
        contract_checks.check_contracts()
    chain.revert(snapshot)  # the reorg: the drain never happened on the chain that stays
    chain.mine(5)
    sync_chain("bsc")
    contract_checks.check_contracts()
    assert escrow_alerts() == set() and pages() == []


def test_auto_pause_a_real_insolvency_pauses_exactly_once_with_its_audit_row_p0_and_incident(guarded):
    node = guarded
    node.create_order()
    sync_chain("bsc")
    assert check_chain_now(chain="bsc") == []
    drain_block = drain(node)
    sync_chain("bsc")
    assert "escrow-short-observed:bsc" in check_chain_now(chain="bsc")
    assert not node.escrow.functions.paused().call() and not ContractAction.objects.filter(kind="pause").exists()
    node.mine()
    sync_chain("bsc")
    assert "escrow-insolvent:bsc" in check_chain_now(chain="bsc")

    [pause] = ContractAction.objects.filter(kind="pause")
    assert pause.is_automatic and pause.custody == "guardian_key" and pause.status == ActionStatus.SENT
    assert pause.signer_address == node.accounts[GUARDIAN_INDEX].lower() and pause.tx_to == node.module.address.lower()
    done = confirm(pause)
    assert done.status == ActionStatus.CONFIRMED, done.outcome
    assert node.escrow.functions.paused().call()
    receipt = node.w3.eth.get_transaction_receipt(pause.tx_hash)
    assert receipt["blockNumber"] - drain_block <= 3, "paused within the blocks it took to see it twice"

    audit = AuditLog.objects.get(action="propose_contract_action", object_id=str(pause.pk))
    assert audit.actor_label == "system:auto-pause" and audit.after["trigger"] == "escrow-insolvent"
    assert "USDT short" in audit.after["evidence"]["short"] and audit.after["evidence"]["first_block"] == drain_block
    paged = Alert.objects.get(key="auto-paused:bsc")
    assert paged.severity == "P0" and "PAUSED automatically" in paged.title and "because" in paged.message
    [incident] = Incident.objects.all()
    assert incident.severity == "P0" and incident.runbook == "RB-05" and incident.created_by is None
    assert list(incident.contract_actions.all()) == [pause] and paged in incident.alerts.all()
    timeline = " | ".join(incident.timeline.order_by("at", "pk").values_list("text", flat=True))
    assert f"First seen: Escrow holds less than its open orders at block {drain_block}" in timeline
    assert f"Pause #{pause.pk} sent by the guardian key" in timeline

    for _ in range(2):  # still insolvent: paged on, never paused twice
        node.mine()
        sync_chain("bsc")
        check_chain_now(chain="bsc")
    assert ContractAction.objects.filter(kind="pause").count() == 1 and Incident.objects.count() == 1
    assert Alert.objects.get(key="contract-paused:bsc").inhibited == f"paused by contract action #{pause.pk}"
    assert Alert.objects.get(key="escrow-insolvent:bsc").state == "firing"


def test_auto_pause_a_sync_that_applied_blocks_queues_the_certain_checks_on_the_actions_queue(
        chain, monkeypatch, django_capture_on_commit_callbacks):
    from backoffice.queues import ACTIONS, ROUTES
    from disputes import signals as screening_signals
    from ops.monitoring import receivers

    sent = []
    # Both receivers of the signal send through their own name: neither may reach the shared test Redis (a message
    # left on a queue there is counted by the queue-depth tests).
    for module in (receivers, screening_signals):
        monkeypatch.setattr(module, "send_task", lambda name, **kwargs: sent.append((name, kwargs)))
    sync_chain("bsc")
    sent.clear()
    chain.create_order()
    with django_capture_on_commit_callbacks(execute=True):
        assert sync_chain("bsc").to_block is not None
    assert ("ops.tasks.check_chain_now", {"chain": "bsc", "options": {"expires": 60}}) in sent
    assert ROUTES["ops.tasks.check_chain_now"] == ACTIONS


def test_auto_pause_stays_off_unless_switched_on_and_a_trigger_switched_off_is_audited(guarded, settings,
                                                                                      staff):
    node = guarded
    autopause.set_auto_pause_trigger(actor=staff["alice"], chain="bsc", trigger="escrow-insolvent", enabled=False,
                                     reason="drill next door")
    assert AuditLog.objects.get(action="set_auto_pause_trigger").after == {
        "chain": "bsc", "trigger": "escrow-insolvent", "enabled": False}
    node.create_order()
    sync_chain("bsc")
    drain(node)
    for _ in range(2):
        sync_chain("bsc")
        check_chain_now(chain="bsc")
        node.mine()
    assert Alert.objects.filter(key="escrow-insolvent:bsc", severity="P0").exists(), "paged all the same"
    assert not ContractAction.objects.filter(kind="pause").exists() and not node.escrow.functions.paused().call()

    autopause.set_auto_pause_trigger(actor=staff["alice"], chain="bsc", trigger="escrow-insolvent", enabled=True,
                                     reason="drill over")
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "auto_pause": "off"}}
    check_chain_now(chain="bsc")
    assert not ContractAction.objects.filter(kind="pause").exists(), "BSC_AUTO_PAUSE=off: people decide"


def test_check_only_warns_in_production_when_the_chain_cannot_be_read(settings):
    """A provider outage says nothing about the key; as an error it would stop every management command (migrate,
    backup_database, contract_action) in production for as long as it lasts."""
    from chain import rpc
    from chain.checks import guardian_key_only_pauses
    from tests.chain.conftest import dead_url

    settings.PRODUCTION = True
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "rpc_url": dead_url(),
                                                  "rpc_fallback": dead_url(), "owner_mode": "safe",
                                                  "escrow": "0x" + "11" * 20, "arbitrator_pool": "0x" + "22" * 20}}
    settings.GUARDIAN_KEY = anvil_key(GUARDIAN_INDEX)
    transactions.reset_signer()
    rpc.reset_clients()
    messages = guardian_key_only_pauses(None)
    assert [m.id for m in messages if "bsc" in m.msg] == ["chain.W003"], messages
    assert not any(m.is_serious() for m in messages)
    assert "could not be read" in messages[0].msg and "RB-07" in messages[0].hint
    rpc.reset_clients()


def test_auto_pause_a_module_enabled_outside_pauses_once_confirmed(guarded):
    node = guarded
    stranger = Web3.to_checksum_address("0x" + "5e" * 20)
    check_chain_now(chain="bsc")
    node.exec_as_owners(node.safe.functions.enableModule(stranger))
    check_chain_now(chain="bsc")
    assert not ContractAction.objects.filter(kind="pause").exists(), "seen once"
    node.mine()
    check_chain_now(chain="bsc")
    [pause] = ContractAction.objects.filter(kind="pause")
    assert pause.group in ("auto-pause-custody-changed", "auto-pause-unknown-module")
    assert confirm(pause).status == ActionStatus.CONFIRMED and node.escrow.functions.paused().call()


def test_auto_pause_an_ownership_transfer_the_back_office_made_is_no_trigger(chain, settings, alice, bob):
    """Moving the contracts to a new owner through the back office (README: moving to a Safe) is no custody change
    outside it: no P1, and no automatic pause (which the old owner key could not even send: a P0 for nothing)."""
    from ops.monitoring.checks.custody import check_custody_of

    from .test_contract_actions import run_to_confirmed

    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "auto_pause": "on"}}
    new_owner = chain.accounts[5].lower()
    assert check_custody_of("bsc") == []
    run_to_confirmed(alice, bob, "transfer_ownership", {"new_owner": new_owner})
    run_to_confirmed(alice, bob, "transfer_pool_ownership", {"new_owner": new_owner})
    for _ in range(2):
        assert check_custody_of("bsc") == []
        chain.mine()
    assert pages() == [] and not ContractAction.objects.filter(kind="pause").exists()
    assert ChainState.objects.get(chain="bsc").custody_snapshot["owner"] == new_owner, "the baseline moved on"


def test_guardian_key_can_pause_through_the_module_and_nothing_else(guarded):
    node = guarded
    guardian = node.accounts[GUARDIAN_INDEX]
    assert guardian.lower() not in [o.lower() for o in node.safe.functions.getOwners().call()]
    assert guardian in node.module.functions.guardians().call()
    node.rpc("anvil_setBalance", [guardian, hex(10**20)])
    for fn in (node.escrow.functions.pause(), node.escrow.functions.unpause(),
               node.escrow.functions.setTreasury(guardian), node.escrow.functions.setPlatformFeeBps(999),
               node.pool.functions.transferOwnership(guardian)):
        with pytest.raises(Exception):  # noqa: B017 - each reverts (not the owner); the reason differs per call
            fn.call({"from": guardian})
    node.send(node.module.functions.pause(), guardian)
    assert node.escrow.functions.paused().call()
    with pytest.raises(Exception):  # noqa: B017 - unpausing is the Safe threshold's alone
        node.escrow.functions.unpause().call({"from": guardian})


def test_check_refuses_a_guardian_key_that_is_the_relayer_or_a_safe_owner(guarded, settings):
    from chain.checks import guardian_key_only_pauses

    node = guarded
    settings.PRODUCTION = True  # no local deployment file then: the chain configured as production configures it
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "rpc_url": node.url,
                                                  "escrow": node.escrow.address,
                                                  "arbitrator_pool": node.pool.address,
                                                  "guardian_module": node.module.address}}
    assert guardian_key_only_pauses(None) == []
    settings.GUARDIAN_KEY = settings.RELAYER_KEY
    transactions.reset_signer()
    [error] = guardian_key_only_pauses(None)
    assert error.id == "chain.E002" and "GUARDIAN_KEY is the same key as RELAYER_KEY" in error.msg
    settings.GUARDIAN_KEY = anvil_key(DEMO_SAFE_OWNERS[0])
    transactions.reset_signer()
    [error] = guardian_key_only_pauses(None)
    assert error.id == "chain.E002" and "is an owner of bsc's Safe" in error.msg
    settings.PRODUCTION = False
    [warning] = guardian_key_only_pauses(None)
    assert warning.id == "chain.W002"
