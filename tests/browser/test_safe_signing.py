"""Safe custody in a real browser: staff register their keys and sign a SafeTx through an injected wallet.

The injected wallet stands in for a staff member's browser extension: an EIP-1193 `window.ethereum`
defined before any page script runs, whose requests this test forwards to anvil, which signs for its
unlocked account (`eth_signTypedData_v4`, `personal_sign`). The page never sees a key.
"""
from __future__ import annotations

import json
import re
import time

import pytest
import requests
from django_otp.plugins.otp_totp.models import TOTPDevice
from web3 import Web3

from ops.actions import services as actions
from ops.models import ActionStatus, ContractAction, StaffSigningKey

from .conftest import device_code

pytestmark = [pytest.mark.browser, pytest.mark.anvil, pytest.mark.django_db(transaction=True)]

NEW_TREASURY = "0x00000000000000000000000000000000000000dd"

WALLET_JS = """
(() => {
  const pending = [], waiting = {};
  let next = 1;
  window.__testWallet = {
    take() { return pending.splice(0, pending.length); },
    resolve(id, result, error) { const w = waiting[id]; delete waiting[id];
                                  if (error) w.reject(new Error(error)); else w.resolve(result); },
  };
  window.ethereum = { isTestWallet: true,
    request({ method, params }) {
      const id = next++;
      pending.push({ id, method, params: params || [] });
      return new Promise((resolve, reject) => { waiting[id] = { resolve, reject }; });
    } };
})();
"""


class InjectedWallet:
    """The test's side of the injected wallet: answers the page's requests with anvil's signatures."""

    def __init__(self, browser, rpc_url: str, account: str):
        self.browser, self.rpc_url, self.account = browser, rpc_url, account
        browser.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": WALLET_JS})
        self.requests: list[str] = []

    def _anvil(self, method: str, params: list):
        body = requests.post(self.rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params},
                             timeout=30).json()
        assert "error" not in body, body
        return body["result"]

    def serve_until_navigation(self, timeout: float = 30) -> None:
        """Answer the page's wallet requests until it submits its form and another page has loaded."""
        from selenium.common.exceptions import WebDriverException

        driver, start_url = self.browser.driver, self.browser.driver.current_url
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if (driver.current_url != start_url
                        and driver.execute_script("return document.readyState") == "complete"):
                    return
                batch = driver.execute_script("return window.__testWallet.take()")
            except WebDriverException:  # the page is being replaced
                time.sleep(0.2)
                continue
            for item in batch:
                self.requests.append(item["method"])
                driver.execute_script("window.__testWallet.resolve(arguments[0], arguments[1])", item["id"],
                                      self.answer(item["method"], item["params"]))
            time.sleep(0.1)
        raise AssertionError(f"the page never moved on; wallet requests: {self.requests}; page: "
                             f"{self.browser.find('#content').text[:600]}")

    def answer(self, method: str, params: list):
        if method in ("eth_requestAccounts", "eth_accounts"):
            return [self.account.lower()]
        if method == "eth_signTypedData_v4":
            assert params[0].lower() == self.account.lower()
            json.loads(params[1])  # the page hands over the typed data as JSON text
            return self._anvil("eth_signTypedData_v4", [self.account, params[1]])
        if method == "personal_sign":
            return self._anvil("personal_sign", params)
        raise AssertionError(f"unexpected wallet request {method}")


def login(open_browser, user):
    browser = open_browser(user.username)
    browser.login(user.username, code=lambda: device_code(TOTPDevice.objects.get(user=user)))
    assert browser.path == "/admin/", browser.text[:300]
    return browser


def register_directly(user, rpc_url: str, account: str) -> None:
    challenge = actions.signing_key_challenge(user=user)
    signature = requests.post(rpc_url, json={"jsonrpc": "2.0", "id": 1, "method": "personal_sign",
                                             "params": ["0x" + challenge.encode().hex(), account]}).json()["result"]
    actions.register_signing_key(actor=user, address=account, challenge=challenge, signature=signature)


def test_safe_action_is_signed_by_two_owners_in_the_browser_and_executed(open_browser, make_staff,
                                                                        safe_local_chain):
    owners = safe_local_chain["custody"]["owners"]
    rpc_url = safe_local_chain["rpc_url"]
    otto = make_staff("otto", "contract operator", "contract approver")
    ada = make_staff("ada", "contract approver")
    register_directly(otto, rpc_url, owners[0])

    # ada registers her key in the browser: the wallet signs the challenge (personal_sign).
    approver = open_browser("ada")
    ada_wallet = InjectedWallet(approver, rpc_url, owners[1])
    approver.login("ada", code=lambda: device_code(TOTPDevice.objects.get(user=ada)))
    approver.get("/admin/ops/staffsigningkey/register/")
    assert "register this address as the contract-signing key of staff user ada" in approver.text
    approver.shot("register-key")
    approver.find("#wallet-register").click()
    ada_wallet.serve_until_navigation()
    assert f"Registered {owners[1].lower()} as your signing key." in approver.text, approver.text[:400]
    assert StaffSigningKey.objects.get(user=ada).address == owners[1].lower()
    approver.shot("key-registered")

    # otto proposes a treasury change and signs it in his browser.
    proposer = open_browser("otto")
    otto_wallet = InjectedWallet(proposer, rpc_url, owners[0])
    proposer.login("otto", code=lambda: device_code(TOTPDevice.objects.get(user=otto)))
    proposer.get("/admin/ops/contractaction/propose/")
    proposer.select("#id_chain", "bsc")
    proposer.select("#id_kind", "set_treasury")
    proposer.fill("#id_treasury", NEW_TREASURY)
    proposer.fill("#id_reason", "Fees to the new treasury Safe (OPS-211).")
    proposer.click_and_wait(proposer.button("Simulate and propose"))
    match = re.search(r"Proposed #(\d+)", proposer.text)
    assert match, proposer.text[:500]
    action = ContractAction.objects.get(pk=int(match.group(1)))
    assert action.custody == "safe" and action.status == ActionStatus.PROPOSED
    proposer.click_and_wait(proposer.find(f"a[href$='/{action.pk}/sign/']"))
    page = proposer.text
    # Shown in readable form before signing: the Safe, the decoded call, the nonce and the hash.
    assert action.safe_address in page and f"setTreasury(treasury={Web3.to_checksum_address(NEW_TREASURY)})" in page
    assert action.signing_hash in page and re.search(rf"nonce\s+{action.safe_nonce}\b", page)
    # What it changes, simulated on a fork before anyone signs, and the hashes the wallet shows.
    assert "escrow.treasury" in page and NEW_TREASURY in page and "TreasuryUpdated" in page, page[:2000]
    assert "Message hash" in page and "cast keccak" in proposer.driver.page_source
    proposer.shot("sign-page")
    proposer.find("#wallet-sign").click()
    otto_wallet.serve_until_navigation()
    assert "signature recorded; more are needed" in proposer.text, proposer.text[:400]
    assert "eth_signTypedData_v4" in otto_wallet.requests
    proposer.shot("one-signature")

    approver.get(f"/admin/ops/contractaction/{action.pk}/sign/")
    approver.find("#wallet-sign").click()
    ada_wallet.serve_until_navigation()
    assert "the signatures reach the Safe's threshold" in approver.text, approver.text[:400]
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED and action.approved_by == ada
    approver.shot("threshold-reached")

    proposer.get(f"/admin/ops/contractaction/{action.pk}/execute/")
    proposer.find("#id_confirm").click()
    proposer.click_and_wait(proposer.button("Execute"))
    assert "Sent 0x" in proposer.text, proposer.text[:400]
    proposer.shot("executed")
    action.refresh_from_db()
    assert action.status == ActionStatus.SENT
    w3 = Web3(Web3.HTTPProvider(rpc_url))
    escrow = w3.eth.contract(address=Web3.to_checksum_address(safe_local_chain["escrow"]),
                             abi=[{"name": "treasury", "type": "function", "stateMutability": "view", "inputs": [],
                                   "outputs": [{"name": "", "type": "address"}]}])
    assert escrow.functions.treasury().call().lower() == NEW_TREASURY
    assert w3.eth.get_transaction(action.tx_hash)["from"].lower() == safe_local_chain["custody"]["relayer"].lower()
