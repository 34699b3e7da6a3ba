"""Every change form an ops admin (or the superuser) can save, saved back as it is shown: no 500, and saved.

The authorization matrix posts change forms empty (refused by validation, so `save_model` never runs); here each
form goes back with its own values, so a change page's save path (its service call, audit row, inline formsets)
runs at least once per model. Each save runs in a savepoint rolled back after it.
"""
from __future__ import annotations

from html.parser import HTMLParser

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from tests.test_authorization_matrix import MODELS, SU, world  # noqa: F401 - the matrix's world, as a fixture

pytestmark = pytest.mark.django_db  # each test in a savepoint of the world's transaction, as in the matrix

# Every registered model whose change form someone may save; the disputed order's change page is a redirect.
CHANGEABLE = sorted(m for m, (_, _, change, _) in MODELS.items() if change and m != "disputes_disputedorder")


class FormValues(HTMLParser):
    """The values a browser would submit for the admin's change form (`<form id="…_form">`)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.data: dict[str, list[str]] = {}
        self._in_form = False
        self._select: str | None = None
        self._textarea: str | None = None
        self._text: list[str] = []

    def _add(self, name: str | None, value: str) -> None:
        if name:
            self.data.setdefault(name, []).append(value)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("id") or "").endswith("_form"):
            self._in_form = True
        if not self._in_form:
            return
        kind = (a.get("type") or "text").lower()
        if tag == "input" and kind not in ("submit", "button", "file", "image", "reset"):
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._add(a.get("name"), a.get("value") or "on")
            else:
                self._add(a.get("name"), a.get("value") or "")
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self._add(self._select, a.get("value") or "")
        elif tag == "textarea":
            self._textarea, self._text = a.get("name"), []

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "select":
            self._select = None
        elif tag == "textarea" and self._textarea:
            # A browser drops the one newline that follows <textarea>.
            self._add(self._textarea, "".join(self._text).removeprefix("\n"))
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self._text.append(data)


@pytest.mark.parametrize("model", CHANGEABLE)
def test_change_form_saves_back_as_it_is_shown(world, model):  # noqa: F811 - the fixture imported above
    client = Client()
    client.cookies["sessionid"] = world["sessions"][SU]
    url = reverse(f"admin:{model}_change", args=[world["objects"][model].pk])
    page = client.get(url)
    assert page.status_code == 200, page.status_code
    parser = FormValues()
    parser.feed(page.content.decode())
    assert parser.data, "the change form was found and has fields"
    data = {**parser.data, "_save": "Save"}
    if data.get("reason") == [""]:  # audited settings ask why they change: the one field a person must fill in
        data["reason"] = ["saved back by the change-form test"]
    with transaction.atomic():
        response = client.post(url, data)
        transaction.set_rollback(True)
    errors = ""
    if response.status_code == 200 and response.context and response.context.get("errors"):
        errors = str(response.context["errors"])
    assert response.status_code == 302, f"{model}: {response.status_code} {errors}"


@pytest.fixture
def flag_off(world):  # noqa: F811
    """A superuser's client and the TRADES_ENABLED page, trading turned off, in a savepoint rolled back after."""
    from ops.models import PlatformFlag

    client = Client()
    client.cookies["sessionid"] = world["sessions"][SU]
    flag = world["objects"]["ops_platformflag"]
    with transaction.atomic():
        PlatformFlag.objects.filter(pk=flag.pk).update(value=False)
        yield client, reverse("admin:ops_platformflag_change", args=[flag.pk]), flag
        transaction.set_rollback(True)


def test_trading_flag_form_saves_while_on_but_never_turns_trading_back_on(flag_off):
    """TRADES_ENABLED goes back on only through Resume (four eyes); the form may still save it while it is on."""
    from ops.models import PlatformFlag

    client, url, flag = flag_off
    parser = FormValues()
    parser.feed(client.get(url).content.decode())
    assert parser.data["value"] == ["false"], "shown off"
    response = client.post(url, {**parser.data, "value": "true", "reason": "back to normal", "_save": "Save"})
    assert response.status_code == 403
    assert PlatformFlag.objects.get(pk=flag.pk).value is False


@pytest.mark.parametrize("value", ["1", '"true"', "0"])
def test_trading_flag_form_takes_only_true_or_false(flag_off, value):
    """A switch set to 1 or "true" would read as on to some code and not to other: refused, naming the fix."""
    from ops.models import PlatformFlag

    client, url, flag = flag_off
    response = client.post(url, {"value": value, "reason": "try", "_save": "Save"})
    assert response.status_code == 200 and "is a switch: true or false" in response.content.decode()
    assert PlatformFlag.objects.get(pk=flag.pk).value is False
