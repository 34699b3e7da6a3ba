"""Staff signing keys: registered only by signing one's own fresh challenge with the key; audited; never a secret."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from eth_account import Account
from eth_account.messages import encode_defunct

from backoffice.audit.models import AuditLog
from backoffice.audit.selectors import verify_audit_chain
from ops.actions import services as actions
from ops.models import StaffSigningKey

pytestmark = pytest.mark.django_db


def signed(account, message: str) -> str:
    return "0x" + account.sign_message(encode_defunct(text=message)).signature.hex().removeprefix("0x")


@pytest.fixture
def approver(django_user_model):
    return django_user_model.objects.create_user("erin", password="erin-password-1", is_staff=True, is_superuser=True)


@pytest.fixture
def other(django_user_model):
    return django_user_model.objects.create_user("frank", password="frank-password-1", is_staff=True,
                                                 is_superuser=True)


def test_register_signing_key_with_a_signed_challenge_is_recorded_and_audited(approver):
    account = Account.create()
    challenge = actions.signing_key_challenge(user=approver)
    key = actions.register_signing_key(actor=approver, address=account.address, challenge=challenge,
                                       signature=signed(account, challenge), label="laptop")
    assert key.address == account.address.lower() and key.user == approver and key.is_active
    row = AuditLog.objects.get(action="register_signing_key")
    assert row.after["address"] == key.address and verify_audit_chain().ok
    assert account.key.hex().removeprefix("0x") not in str(StaffSigningKey.objects.values().first())


def test_register_signing_key_accepts_the_challenge_as_a_browser_form_sends_it(approver):
    # Browsers submit form fields with CRLF line breaks; the wallet signed the LF text the page showed.
    account = Account.create()
    challenge = actions.signing_key_challenge(user=approver)
    key = actions.register_signing_key(actor=approver, address=account.address,
                                       challenge=challenge.replace("\n", "\r\n"), signature=signed(account, challenge))
    assert key.challenge == challenge


def test_register_signing_key_signed_by_another_address_names_it(approver):
    mine, theirs = Account.create(), Account.create()
    challenge = actions.signing_key_challenge(user=approver)
    with pytest.raises(ValidationError) as err:
        actions.register_signing_key(actor=approver, address=mine.address, challenge=challenge,
                                     signature=signed(theirs, challenge))
    assert theirs.address.lower() in " ".join(err.value.messages)
    assert not StaffSigningKey.objects.exists()


def test_register_signing_key_with_someone_elses_challenge_is_refused(approver, other):
    account = Account.create()
    challenge = actions.signing_key_challenge(user=other)
    with pytest.raises(ValidationError, match="another user"):
        actions.register_signing_key(actor=approver, address=account.address, challenge=challenge,
                                     signature=signed(account, challenge))


def test_register_signing_key_expired_challenge_is_refused(approver, settings):
    account = Account.create()
    challenge = actions.signing_key_challenge(user=approver)
    settings.SIGNING_CHALLENGE_SECONDS = -1
    with pytest.raises(ValidationError, match="expired"):
        actions.register_signing_key(actor=approver, address=account.address, challenge=challenge,
                                     signature=signed(account, challenge))


def test_register_page_offers_a_fresh_challenge_after_an_expired_one(staff_client, staff_user, settings):
    from django.urls import reverse

    account = Account.create()
    old = actions.signing_key_challenge(user=staff_user)
    settings.SIGNING_CHALLENGE_SECONDS = -1
    page = staff_client.post(reverse("admin:ops_staffsigningkey_register"), {
        "address": account.address, "challenge": old, "signature": signed(account, old), "label": "laptop"})
    assert page.status_code == 200 and "sign the new one shown here" in page.content.decode()
    assert page.context["challenge"] != old and "Token: " in page.context["challenge"]
    assert not StaffSigningKey.objects.filter(address=account.address.lower()).exists()


def test_register_signing_key_one_address_belongs_to_one_person(approver, other):
    account = Account.create()
    for user in (approver, other):
        challenge = actions.signing_key_challenge(user=user)
        if user is approver:
            actions.register_signing_key(actor=user, address=account.address, challenge=challenge,
                                         signature=signed(account, challenge))
        else:
            with pytest.raises(ValidationError, match="already registered to erin"):
                actions.register_signing_key(actor=user, address=account.address, challenge=challenge,
                                             signature=signed(account, challenge))


def test_register_signing_key_bad_signature_says_what_to_paste(approver):
    with pytest.raises(ValidationError, match="132 hex digits"):
        actions.register_signing_key(actor=approver, address=Account.create().address,
                                     challenge=actions.signing_key_challenge(user=approver), signature="0x1234")


def test_signing_key_command_registers_from_a_keystore(approver, tmp_path):
    import json

    account = Account.create()
    path = tmp_path / "erin.json"
    path.write_text(json.dumps(Account.encrypt(account.key, "pw-erin")))
    (tmp_path / "pw").write_text("pw-erin\n")
    call_command("signing_key", "register", "--as", "erin", "--keystore", str(path), "--password-file",
                 str(tmp_path / "pw"))
    assert StaffSigningKey.objects.get().address == account.address.lower()


def test_owner_key_in_safe_mode_fails_the_production_check(settings):
    from chain.checks import owner_key_in_safe_mode

    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "owner_mode": "safe"}}
    settings.OWNER_KEY = "0x" + "11" * 32
    settings.PRODUCTION = True
    [error] = owner_key_in_safe_mode(None)
    assert error.id == "chain.E001" and "OWNER_KEY" in error.msg
    settings.OWNER_KEY = ""
    settings.OWNER_KEYSTORE = ""
    assert owner_key_in_safe_mode(None) == []


def test_owner_key_in_eoa_mode_passes_the_check(settings):
    from chain.checks import owner_key_in_safe_mode

    settings.CHAINS = {k: {**v, "owner_mode": "eoa"} for k, v in settings.CHAINS.items()}
    settings.OWNER_KEY = "0x" + "11" * 32
    settings.PRODUCTION = True
    assert owner_key_in_safe_mode(None) == []
