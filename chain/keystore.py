"""A person's own encrypted keystore, used in their own terminal process to sign typed data or a challenge."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.views.decorators.debug import sensitive_variables
from eth_account import Account
from eth_account.messages import encode_defunct, encode_typed_data

from .safe import _numeric


class KeystoreError(ValueError):
    """The keystore is missing, unreadable or its password is wrong. Never carries key material."""


@sensitive_variables()
def _load(path: Path, password: str):
    if not path.is_file():
        raise KeystoreError(f"{path} is not a file.")
    try:
        return Account.from_key(Account.decrypt(json.loads(path.read_text()), password))
    except (ValueError, KeyError, json.JSONDecodeError):
        raise KeystoreError(f"{path} could not be decrypted: wrong password, or not a JSON keystore.") from None


def keystore_address(path: Path, password: str) -> str:
    return _load(path, password).address.lower()


@sensitive_variables()
def sign_typed_data(path: Path, password: str, typed: dict[str, Any]) -> str:
    signed = _load(path, password).sign_message(encode_typed_data(full_message=_numeric(typed)))
    return "0x" + signed.signature.hex().removeprefix("0x")


@sensitive_variables()
def sign_text(path: Path, password: str, message: str) -> tuple[str, str]:
    """(address, personal_sign signature) of `message`."""
    account = _load(path, password)
    signed = account.sign_message(encode_defunct(text=message))
    return account.address.lower(), "0x" + signed.signature.hex().removeprefix("0x")


@sensitive_variables()
def sign_text_with_key(key: str, message: str) -> tuple[str, str]:
    """(address, personal_sign signature) with a raw key: development's published anvil accounts only."""
    account = Account.from_key(key)
    signed = account.sign_message(encode_defunct(text=message))
    return account.address.lower(), "0x" + signed.signature.hex().removeprefix("0x")
