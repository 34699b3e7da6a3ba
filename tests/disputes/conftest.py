"""Fixtures for trust and safety tests: staff in each role (groups from ops/migrations/0008_roles.py), disputes."""
from __future__ import annotations

import pytest
from django.contrib.auth.models import Group


@pytest.fixture
def make_staff(django_user_model):
    """A staff user in the given role groups (the groups the roles migration created)."""

    def make(username: str, *roles: str):
        user = django_user_model.objects.create_user(username, is_staff=True)  # no password: force_login, no hashing
        groups = list(Group.objects.filter(name__in=roles))
        assert len(groups) == len(roles), f"unknown role among {roles}"
        user.groups.set(groups)
        return user

    return make


@pytest.fixture
def reviewer(make_staff):
    return make_staff("rita", "dispute reviewer")


@pytest.fixture
def other_reviewer(make_staff):
    return make_staff("rob", "dispute reviewer")


@pytest.fixture
def manager(make_staff):
    return make_staff("mia", "blacklist manager")


@pytest.fixture
def viewer(make_staff):
    return make_staff("vic", "viewer")


@pytest.fixture
def operator(make_staff):
    return make_staff("otto", "contract operator")


@pytest.fixture
def login(client):
    def as_user(user):
        client.force_login(user)
        return client

    return as_user

