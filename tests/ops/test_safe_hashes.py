"""The hashes a Safe owner checks on the hardware wallet: shown on the signing page and by `contract_action show`,
equal to what foundry's real `cast` recomputes from the fields alone and to the Safe's own hashes on chain."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from ops.actions import services as actions

from .custody_fixtures import *  # noqa: F403 - fixtures

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


def cast_dir() -> str:
    local = Path(settings.BASE_DIR) / "node_modules" / ".bin"
    if (local / "cast").exists():
        return str(local)
    found = shutil.which("cast")
    if not found:
        pytest.fail("cast is not installed: run make install (npm ci installs @foundry-rs/cast)")
    return str(Path(found).parent)


def run_cast_line(line: str) -> dict[str, str]:
    """Run the page's one-line command in bash with the real cast, as a signer pastes it into a terminal."""
    env = {**os.environ, "PATH": cast_dir() + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run(["bash", "-c", line], capture_output=True, text=True, env=env, timeout=60, check=True)
    out = dict(re.findall(r"^(domain separator|message hash|safeTxHash): (0x[0-9a-f]{64})$", done.stdout, re.M))
    assert len(out) == 3, done.stdout + done.stderr
    return out


def propose(actor, kind, params):
    return actions.propose_contract_action(actor=actor, chain="bsc", kind=kind, params=params,
                                           reason="runbook §8 owner call")


@pytest.mark.parametrize(("kind", "params"), [
    ("set_treasury", {"treasury": "0x00000000000000000000000000000000000000bb"}),
    ("set_platform_fee", {"bps": 150}),
    ("pause", {}),
])
def test_safe_hashes_shown_equal_casts_and_the_safes_own(safe_chain, staff, kind, params):
    action = propose(staff["alice"], kind, params)
    shown = json.loads(_show(action.pk))["safe_tx"]
    by_cast = run_cast_line(shown["cast_command"])
    assert by_cast == {"domain separator": shown["domain_separator"], "message hash": shown["message_hash"],
                       "safeTxHash": shown["safe_tx_hash"]}
    assert shown["safe_tx_hash"] == action.signing_hash
    # The Safe contract itself agrees on the domain and the hash it will check the signatures against.
    assert shown["domain_separator"] == "0x" + safe_chain.safe.functions.domainSeparator().call().hex()
    assert shown["safe_tx_hash"] == "0x" + safe_chain.safe.functions.getTransactionHash(
        safe_chain.escrow.address, 0, bytes.fromhex(action.calldata[2:]), 0, 0, 0, 0, "0x" + "00" * 20,
        "0x" + "00" * 20, action.safe_nonce).call().hex()
    assert shown["fields"]["nonce"] == str(action.safe_nonce) and shown["fields"]["data"] == action.calldata
    assert shown["message_hash_device"] == "0x" + shown["message_hash"][2:].upper()


def test_safe_hashes_of_a_cancel_with_empty_data_equal_casts(safe_chain, staff):
    rejected = propose(staff["alice"], "set_platform_fee", {"bps": 150})
    actions.reject_contract_action(actor=staff["bob"], action=rejected, reason="wrong fee")
    cancel = actions.propose_safe_tx_cancel(actor=staff["alice"], action=rejected, reason="never execute it")
    shown = json.loads(_show(cancel.pk))["safe_tx"]
    assert shown["fields"]["data"] == "0x"
    assert run_cast_line(shown["cast_command"])["safeTxHash"] == cancel.signing_hash


def test_signing_page_shows_the_fields_the_three_hashes_and_the_cast_line(safe_chain, staff, client):
    action = propose(staff["alice"], "set_treasury", {"treasury": "0x00000000000000000000000000000000000000bb"})
    client.force_login(staff["bob"])
    page = client.get(reverse("admin:ops_contractaction_sign", args=[action.pk])).content.decode()
    shown = json.loads(_show(action.pk))["safe_tx"]
    for value in (shown["domain_separator"], shown["message_hash"], shown["safe_tx_hash"],
                  shown["domain_separator_device"], "refundReceiver", "safeTxGas"):
        assert value in page
    assert "cast keccak" in page and "cast concat-hex 0x1901" in page
    detail = client.get(reverse("admin:ops_contractaction_change", args=[action.pk])).content.decode()
    assert shown["message_hash"] in detail and shown["safe_tx_hash"] in detail


def _show(pk: int) -> str:
    out = io.StringIO()
    call_command("contract_action", "show", str(pk), stdout=out)
    return out.getvalue()
