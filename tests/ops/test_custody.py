"""Custody services on a real anvil: a signature counts only while its key, its signer and their role hold;
one open action per SafeTx; a rejected SafeTx proposed again takes its owners' signatures again."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.core.exceptions import ValidationError
from django.urls import reverse
from web3 import Web3

from ops.actions import propose
from ops.actions import services as actions
from ops.models import ActionStatus

from .custody_fixtures import *  # noqa: F403 - fixtures
from .test_safe import NEW_TREASURY, confirm, propose_treasury, sign

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


def only_roles(user, *codenames: str):
    """The same person, no longer a superuser, holding only the given ops permissions (read fresh, as a request
    would: Django caches permissions on the user object)."""
    user.is_superuser = False
    user.save(update_fields=["is_superuser"])
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="ops", codename__in=codenames))
    fresh = type(user).objects.get(pk=user.pk)
    fresh.account = user.account
    return fresh


def withdraw_revoke(bob):
    actions.revoke_signing_key(actor=bob, key=bob.signing_keys.get(), reason="laptop stolen")


def withdraw_deactivate(bob):
    bob.is_active = False
    bob.save(update_fields=["is_active"])


def withdraw_role(bob):
    only_roles(bob, "view_contractaction", "add_contractaction")


@pytest.mark.parametrize("withdraw,why", [(withdraw_revoke, "key was revoked"),
                                          (withdraw_deactivate, "bob's account is deactivated"),
                                          (withdraw_role, "bob no longer holds the ops.approve_contractaction role")])
def test_tally_withdrawn_signer_no_longer_counts_and_execution_is_refused(safe_chain, staff, withdraw, why):
    alice, bob, carol = staff["alice"], staff["bob"], staff["carol"]
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    assert action.status == ActionStatus.APPROVED
    withdraw(bob)
    relayer_nonce = safe_chain.w3.eth.get_transaction_count(safe_chain.relayer)
    if withdraw is withdraw_revoke:  # a revocation recounts at once: no list shows the action ready to execute
        action.refresh_from_db()
        assert action.status == ActionStatus.PROPOSED and "was revoked" in action.outcome
        assert "another owner must sign in its place" in action.outcome
        with pytest.raises(ValidationError, match="only an approved action"):
            actions.execute_contract_action(actor=alice, action=action)
    else:  # a deactivation or a lost role is seen when it executes
        with pytest.raises(ValidationError) as err:
            actions.execute_contract_action(actor=alice, action=action)
        text = " ".join(err.value.messages)
        assert "bob" in text and why in text and "another owner must sign in its place" in text
    action.refresh_from_db()
    assert action.status == ActionStatus.PROPOSED and not action.raw_tx and action.tx_hash is None
    assert safe_chain.w3.eth.get_transaction_count(safe_chain.relayer) == relayer_nonce
    assert safe_chain.escrow.functions.treasury().call() != Web3.to_checksum_address(NEW_TREASURY)
    # What the message says to do: another owner signs, and it executes.
    action = sign(safe_chain, action, carol)
    assert action.status == ActionStatus.APPROVED
    assert confirm(actions.execute_contract_action(actor=alice, action=action)).status == ActionStatus.CONFIRMED
    assert safe_chain.escrow.functions.treasury().call().lower() == NEW_TREASURY


def test_tally_proposers_own_signature_counts_with_the_propose_role_alone(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, propose_treasury(alice), alice)
    only_roles(alice, "view_contractaction", "add_contractaction")
    action = sign(safe_chain, action, bob)
    assert action.status == ActionStatus.APPROVED


def test_signing_page_says_why_a_signature_no_longer_counts(safe_chain, staff, client):
    alice, bob = staff["alice"], staff["bob"]
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    withdraw_revoke(bob)
    client.force_login(alice)
    for url in (reverse("admin:ops_contractaction_sign", args=[action.pk]),
                reverse("admin:ops_contractaction_change", args=[action.pk])):
        page = client.get(url).content.decode()
        assert "key was revoked" in page and "another owner must sign in its place" in page, url


def test_reproposal_of_a_rejected_safetx_takes_the_same_owners_signatures(safe_chain, staff):
    alice, bob, carol = staff["alice"], staff["bob"], staff["carol"]
    first = sign(safe_chain, propose_treasury(alice), alice)
    actions.reject_contract_action(actor=carol, action=first, reason="reason too vague")
    second = propose_treasury(alice)
    assert second.signing_hash == first.signing_hash
    second = sign(safe_chain, second, alice)  # byte-identical to the signature given to #first
    assert second.signatures.get().signature == first.signatures.get().signature
    second = sign(safe_chain, second, bob)
    assert second.status == ActionStatus.APPROVED
    assert confirm(actions.execute_contract_action(actor=alice, action=second)).status == ActionStatus.CONFIRMED
    assert safe_chain.escrow.functions.treasury().call().lower() == NEW_TREASURY


def test_proposal_of_a_safetx_already_open_is_refused_naming_the_open_action(safe_chain, staff):
    alice, bob = staff["alice"], staff["bob"]
    first = sign(safe_chain, propose_treasury(alice), alice)
    with pytest.raises(ValidationError) as err:
        propose_treasury(bob)
    text = " ".join(err.value.messages)
    assert f"#{first.pk}" in text and first.signing_hash in text and "nothing was proposed" in text
    assert type(first).objects.filter(signing_hash=first.signing_hash).count() == 1


def test_database_refuses_a_second_open_action_for_one_safetx(safe_chain, staff):
    """The rule holds below the service too (a bulk path, a second writer): only replacements share the hash."""
    from django.db import IntegrityError, transaction

    first = propose_treasury(staff["alice"])
    clone = type(first).objects.get(pk=first.pk)
    clone.pk = None
    with pytest.raises(IntegrityError, match="contract_actions_one_open_per_safe_tx"), transaction.atomic():
        clone.save(force_insert=True)
    actions.reject_contract_action(actor=staff["carol"], action=first, reason="proposed twice by mistake")
    clone.save(force_insert=True)  # the first is closed: the SafeTx may be proposed again
    assert type(first).objects.filter(signing_hash=first.signing_hash).count() == 2


def test_revoked_key_leaves_an_action_approved_while_the_others_still_reach_the_threshold(safe_chain, staff):
    alice, bob, carol = staff["alice"], staff["bob"], staff["carol"]
    action = sign(safe_chain, sign(safe_chain, propose_treasury(alice), alice), bob)
    action = sign(safe_chain, action, carol)
    withdraw_revoke(bob)
    action.refresh_from_db()
    assert action.status == ActionStatus.APPROVED, "alice and carol still make two of three"
    assert confirm(actions.execute_contract_action(actor=alice, action=action)).status == ActionStatus.CONFIRMED


def test_proposal_losing_a_race_for_the_same_safetx_names_the_winner(safe_chain, staff, monkeypatch):
    """The check ran before the other proposal committed (as in a race): the index refuses the insert, and the
    refusal still names the open action instead of a database error."""
    first = propose_treasury(staff["alice"])
    real, checks_run = propose.refuse_open_safe_tx, []

    def checked_too_early(signing_hash):
        checks_run.append(signing_hash)
        if len(checks_run) > 1:
            real(signing_hash)

    monkeypatch.setattr(propose, "refuse_open_safe_tx", checked_too_early)
    with pytest.raises(ValidationError) as err:
        propose_treasury(staff["bob"])
    assert f"#{first.pk}" in " ".join(err.value.messages) and len(checks_run) == 2
    assert type(first).objects.filter(signing_hash=first.signing_hash).count() == 1
