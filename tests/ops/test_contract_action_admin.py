"""The contract-action admin pages and the `contract_action` command, against a real anvil."""
from __future__ import annotations

import io
import json

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse

from chain.sync import sync_chain
from ops.actions import services as actions
from ops.models import ActionStatus, ContractAction, PlatformFlag

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]

NEW_TREASURY = "0x00000000000000000000000000000000000000bb"


@pytest.fixture
def alice_client(client, alice):
    client.force_login(alice)
    return client


def propose_fee(actor, bps=150):
    return actions.propose_contract_action(actor=actor, chain="bsc", kind="set_platform_fee", params={"bps": bps},
                                           reason="fee review")


def test_contract_action_admin_propose_page_validates_and_proposes(chain, alice_client, alice):
    url = reverse("admin:ops_contractaction_propose")
    assert alice_client.get(url).status_code == 200

    bad = alice_client.post(url, {"chain": "bsc", "kind": "set_treasury", "treasury": "0x1234", "reason": "rotate"})
    assert bad.status_code == 200
    assert "treasury" in bad.context["form"].errors
    assert not ContractAction.objects.exists()

    good = alice_client.post(url, {"chain": "bsc", "kind": "set_treasury", "treasury": NEW_TREASURY,
                                   "reason": "rotate to the multisig"})
    assert good.status_code == 302
    action = ContractAction.objects.get()
    assert action.status == ActionStatus.PROPOSED and action.proposed_by == alice
    assert action.params == {"treasury": NEW_TREASURY}


def test_contract_action_admin_approve_page_shows_the_call_and_simulation_and_refuses_the_proposer(
        chain, alice_client, client, alice, bob):
    action = propose_fee(alice)
    url = reverse("admin:ops_contractaction_approve", args=[action.pk])
    page = alice_client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert "setPlatformFeeBps(bps=150)" in html and "passes at block" in html

    refused = alice_client.post(url, {"confirm": "on"})
    assert refused.status_code == 200
    assert "different person must approve" in refused.content.decode()
    action.refresh_from_db()
    assert action.status == ActionStatus.PROPOSED

    client.force_login(bob)
    assert client.post(url, {"confirm": "on"}).status_code == 302
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED and action.approved_by == bob

    executed = client.post(reverse("admin:ops_contractaction_execute", args=[action.pk]), {"confirm": "on"})
    assert executed.status_code == 302
    action.refresh_from_db()
    assert action.status == ActionStatus.SENT
    assert chain.escrow.functions.platformFeeBps().call() == 150


def test_contract_action_admin_approve_page_shows_a_reverting_simulation(chain, alice_client, alice, bob):
    chain.send(chain.escrow.functions.pause(), chain.owner)
    action = actions.propose_contract_action(actor=alice, chain="bsc", kind="unpause", params={}, reason="resume")
    chain.send(chain.escrow.functions.unpause(), chain.owner)
    page = alice_client.get(reverse("admin:ops_contractaction_approve", args=[action.pk]))
    assert "reverts: ExpectedPause()" in page.content.decode()


def test_contract_action_admin_status_page_shows_the_runbook_reads_and_balance(chain, alice_client):
    chain.create_order(amount=1_234 * 10**18)
    assert sync_chain("bsc").malformed == 0
    page = alice_client.get(reverse("admin:ops_contractaction_status", args=["bsc"]))
    assert page.status_code == 200
    html = page.content.decode()
    for read in ("paused()", "treasury()", "nextOrderId()", "arbitratorPool()", "USDT", "USDC"):
        assert read in html
    status = page.context["status"]
    assert status.ok and status.paused is False and status.next_order_id == 2
    assert status.treasury == chain.treasury.lower()
    assert html.count(">balanced<") == 2 and "SHORT" not in html and "surplus" not in html
    usdt = next(t for t in status.tokens if t.symbol == "USDT")
    assert usdt.open_orders_total == 1234 and usdt.escrow_balance == 1234
    # Amounts read as the value, not with the 18 decimal places of the column (1234.000000000000000000).
    assert "<td>1234</td>" in html and "1234.0" not in html


def test_contract_action_admin_emergency_stop_page_pauses_and_turns_trades_off(chain, alice_client, trades_flag):
    url = reverse("admin:ops_contractaction_emergency_stop")
    assert alice_client.get(url).status_code == 200
    response = alice_client.post(url, {"reason": "exploit suspected"})
    assert response.status_code == 302
    assert chain.escrow.functions.paused().call() is True
    assert PlatformFlag.objects.get(key="TRADES_ENABLED").value is False
    assert ContractAction.objects.get(kind="pause").status == ActionStatus.SENT


def run(*args) -> str:
    out = io.StringIO()
    call_command("contract_action", *args, stdout=out)
    return out.getvalue()


def test_contract_action_command_scripts_the_whole_runbook_step(chain, alice, bob):
    printed = run("propose", "--as", "alice", "--chain", "bsc", "--kind", "set_treasury",
                  "--param", f"treasury={NEW_TREASURY}", "--reason", "rotate to the multisig")
    action = ContractAction.objects.get()
    assert printed.startswith(f"#{action.pk} bsc proposed setTreasury(")

    with pytest.raises(CommandError, match="approved_by: You proposed this action"):
        run("approve", str(action.pk), "--as", "alice")
    assert "approved" in run("approve", str(action.pk), "--as", "bob")
    assert "sent" in run("execute", str(action.pk), "--as", "alice")
    assert json.loads(run("recover"))["confirmed"] == 1
    assert f"#{action.pk} bsc confirmed" in run("list", "--status", "confirmed")
    shown = json.loads(run("show", str(action.pk)))
    assert shown["status"] == "confirmed" and shown["approved_by"] == bob.pk and "raw_tx" not in shown
    assert chain.escrow.functions.treasury().call().lower() == NEW_TREASURY

    with pytest.raises(CommandError, match="treasury"):
        run("propose", "--as", "alice", "--chain", "bsc", "--kind", "set_treasury", "--param", "treasury=0x12",
            "--reason", "typo")
    with pytest.raises(CommandError, match="no active staff user"):
        run("approve", str(action.pk), "--as", "mallory")


def test_cancel_kind_is_for_safe_custody_only_and_not_on_the_propose_form(chain, alice):
    from ops.actions.forms import ProposeActionForm

    with pytest.raises(ValidationError, match="for Safe custody only"):
        actions.propose_contract_action(actor=alice, chain="bsc", kind="cancel_safe_tx", params={}, reason="x")
    assert "cancel_safe_tx" not in dict(ProposeActionForm().fields["kind"].choices)
