"""Token amounts as staff read them: the value, without the 18 trailing zeros its Decimal column carries."""
from __future__ import annotations

from decimal import Decimal

from django import template

register = template.Library()


@register.filter
def token_units(value) -> str:
    """Decimal('250.210000000000000000') → '250.21'; Decimal('1E+3') → '1000'; anything else as it is."""
    if isinstance(value, Decimal) and value.is_finite():
        return f"{value.normalize():f}"
    return "" if value is None else str(value)


@register.filter
def divide_bps(value) -> str:
    """Basis points as a percentage: 250 → '2.5%'."""
    if not isinstance(value, int):
        return ""
    return f"{(Decimal(value) / 100).normalize():f}%"
