"""Exact, index-backed admin search: a search term looked up by its shape (wallet, hash, id or text)."""
from __future__ import annotations

from django.db.models import Q

from backoffice.admin_utils import ADDRESS_RE, HASH_RE


def exact_search(queryset, term: str, *, wallet_fields=(), hash_fields=(), id_fields=(), text_fields=()):
    """Turn one search term into an exact, index-backed lookup by its shape.

    0x + 40 hex → wallet columns; 0x + 64 hex → hash columns; digits → id columns;
    anything else → the (small) text columns, case-insensitive prefix.
    """
    term = term.strip()
    if not term:
        return queryset
    if ADDRESS_RE.match(term):
        fields, value = wallet_fields, term.lower()
    elif HASH_RE.match(term):
        fields, value = hash_fields, term.lower()
    elif term.isascii() and term.isdigit() and len(term) < 19:  # str.isdigit() also accepts "²", which int() refuses
        fields, value = id_fields, int(term)
    else:
        return queryset.filter(_any(text_fields, "istartswith", term)) if text_fields else queryset.none()
    return queryset.filter(_any(fields, "exact", value)) if fields else queryset.none()


def _any(fields, lookup: str, value) -> Q:
    q = Q()
    for field in fields:
        q |= Q(**{f"{field}__{lookup}": value})
    return q


class ExactSearchMixin:
    """Admin search through `exact_search` instead of ILIKE over every column."""

    search_wallet_fields: tuple[str, ...] = ()
    search_hash_fields: tuple[str, ...] = ()
    search_id_fields: tuple[str, ...] = ()
    search_text_fields: tuple[str, ...] = ()
    search_help_text = "Exact: a wallet (0x…40 hex), a tx hash (0x…64 hex) or an id."

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return exact_search(queryset, search_term, wallet_fields=self.search_wallet_fields,
                            hash_fields=self.search_hash_fields, id_fields=self.search_id_fields,
                            text_fields=self.search_text_fields), False
