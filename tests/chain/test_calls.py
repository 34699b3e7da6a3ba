"""Contract action parameters: the contract's own limits are field errors that name the fix, not reverts."""
from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from chain.calls import clean_params

ZERO = "0x" + "0" * 40
SAFE = "0x" + "ab" * 20


@pytest.mark.parametrize("kind, params, field, words", [
    ("set_platform_fee", {"bps": "2000"}, "bps", "between 0 and 1000 (the contract refuses more)"),
    ("set_arbitrator_fee", {"bps": "10001"}, "bps", "between 0 and 10000"),
    ("set_timeouts", {"seller_timeout": "0", "buyer_timeout": "60", "dispute_timeout": "60"}, "seller_timeout",
     "between 1 and"),
    ("set_treasury", {"treasury": ZERO}, "treasury", "cannot be the zero address"),
    ("transfer_ownership", {"new_owner": ZERO}, "new_owner", "cannot be the zero address"),
    ("set_platform_fee", {"bps": "-1"}, "bps", "between 0 and 1000"),
])
def test_contract_limits_are_field_errors_naming_the_fix(kind, params, field, words):
    with pytest.raises(ValidationError) as raised:
        clean_params(kind, params)
    assert field in raised.value.message_dict
    assert words in " ".join(raised.value.message_dict[field])


def test_values_at_the_contract_limits_are_accepted():
    assert clean_params("set_platform_fee", {"bps": "1000"}) == {"bps": 1000}
    assert clean_params("set_arbitrator_fee", {"bps": "10000"}) == {"bps": 10_000}
    assert clean_params("set_timeouts", {"seller_timeout": "1", "buyer_timeout": "1", "dispute_timeout": "1"}) == {
        "seller_timeout": 1, "buyer_timeout": 1, "dispute_timeout": 1}
    assert clean_params("set_treasury", {"treasury": SAFE}) == {"treasury": SAFE}
