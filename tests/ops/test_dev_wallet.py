"""The development wallet bridge (make run): only with a local chain, only for the signed-in person's own keys."""
from __future__ import annotations

import json

import pytest
from django.urls import reverse

from ops.models import StaffSigningKey

pytestmark = pytest.mark.django_db

URL = "admin:ops_contractaction_dev_wallet"


@pytest.fixture
def signer(django_user_model, settings, tmp_path):
    deployment = tmp_path / "deployment.json"
    deployment.write_text("{}")
    settings.CHAIN_DEPLOYMENT_FILE = deployment
    user = django_user_model.objects.create_user("gina", password="gina-password-1", is_staff=True, is_superuser=True)
    StaffSigningKey.objects.create(user=user, address="0x" + "ab" * 20, challenge="c", signature="0x" + "1" * 130)
    return user


@pytest.fixture
def staff_client_for(client):
    def make(user):
        client.force_login(user)
        return client
    return make


def post(client, method, params=None):
    return client.post(reverse(URL), json.dumps({"method": method, "params": params or []}),
                       content_type="application/json")


def test_dev_wallet_offers_only_the_signed_in_persons_keys(staff_client_for, signer):
    client = staff_client_for(signer)
    assert post(client, "eth_requestAccounts").json() == {"result": ["0x" + "ab" * 20]}


def test_dev_wallet_refuses_to_sign_for_another_address(staff_client_for, signer):
    client = staff_client_for(signer)
    response = post(client, "eth_signTypedData_v4", ["0x" + "cd" * 20, "{}"])
    assert response.status_code == 403 and "does not do" in response.json()["error"]


def test_dev_wallet_does_not_exist_without_a_local_chain(staff_client_for, signer, settings, tmp_path):
    settings.CHAIN_DEPLOYMENT_FILE = tmp_path / "missing.json"
    assert post(staff_client_for(signer), "eth_requestAccounts").status_code == 404
