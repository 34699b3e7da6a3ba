"""Four eyes in a real browser: one person proposes a contract action (simulated on a local chain), another approves."""
from __future__ import annotations

import re

import pytest
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.audit.models import AuditLog
from ops.models import ActionStatus, ContractAction

from .conftest import device_code

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

NEW_TREASURY = "0x00000000000000000000000000000000000000aa"


def login(open_browser, user):
    browser = open_browser(user.username)
    browser.login(user.username, code=lambda: device_code(TOTPDevice.objects.get(user=user)))
    assert browser.path == "/admin/", browser.text[:300]
    return browser


def test_contract_action_is_proposed_by_one_person_and_approved_by_another(open_browser, make_staff, local_chain):
    # Otto may also approve: what stops him approving his own proposal is the four-eyes rule, not a missing permission.
    otto = make_staff("otto", "contract operator", "contract approver")
    ada = make_staff("ada", "contract approver")

    proposer = login(open_browser, otto)
    proposer.get("/admin/ops/contractaction/propose/")
    proposer.select("#id_chain", "bsc")
    proposer.select("#id_kind", "set_treasury")
    proposer.fill("#id_treasury", NEW_TREASURY)
    proposer.fill("#id_reason", "Move fees to the new 3-of-5 multisig (ticket OPS-142).")
    proposer.shot("propose-form")
    proposer.click_and_wait(proposer.button("Simulate and propose"))
    match = re.search(r"Proposed #(\d+): setTreasury\(treasury=(0x[0-9a-fA-F]{40})\)\. The simulation passed",
                      proposer.text)
    assert match, proposer.text[:500]
    assert match.group(2).lower() == NEW_TREASURY
    proposer.shot("proposed")
    action = ContractAction.objects.get(pk=int(match.group(1)))
    assert action.status == ActionStatus.PROPOSED and action.proposed_by == otto
    assert action.proposal_simulation["ok"] is True
    assert proposer.path == f"/admin/ops/contractaction/{action.pk}/change/"
    assert not proposer.find_all("a[href$='/approve/']"), "the proposer is not offered the approval"

    # The proposer goes to the approval page anyway: the confirmation is refused.
    proposer.get(f"/admin/ops/contractaction/{action.pk}/approve/")
    proposer.find("#id_confirm").click()
    proposer.click_and_wait(proposer.button("Approve"))
    assert "You proposed this action: a different person must approve it." in proposer.text
    proposer.shot("self-approval-refused")
    action.refresh_from_db()
    assert action.status == ActionStatus.PROPOSED and action.approved_by is None

    approver = login(open_browser, ada)  # a fresh browser: its own profile and session
    approver.get("/admin/ops/contractaction/")
    approver.click_and_wait(approver.find(f"#result_list a[href$='/{action.pk}/change/']"))
    approver.shot("action-page")
    approver.click_and_wait(approver.find(f"a[href$='/{action.pk}/approve/']"))
    assert approver.path == f"/admin/ops/contractaction/{action.pk}/approve/"
    page = approver.text
    assert f"setTreasury(treasury={match.group(2)})" in page, "the decoded call is shown"
    assert re.search(r"simulation now passes at block \d+ \(gas ≈ \d+\)", page), page
    assert "Move fees to the new 3-of-5 multisig" in page and "otto" in page
    approver.shot("approve-confirmation")
    approver.find("#id_confirm").click()
    approver.click_and_wait(approver.button("Approve"))
    assert f"Approved #{action.pk}. An operator can now execute it." in approver.text
    approver.shot("approved")

    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED
    assert action.proposed_by == otto and action.approved_by == ada and action.approved_at is not None
    assert not action.tx_hash and not action.raw_tx and action.nonce is None, "approval signs nothing"
    assert list(AuditLog.objects.filter(object_type="ops.contractaction", object_id=str(action.pk))
                .order_by("id").values_list("action", "actor_label")) == [
        ("propose_contract_action", "otto"), ("approve_contract_action", "ada")]
