"""Bad input is refused at the form and in the database, and wallets are stored in one canonical form."""
from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, transaction

from chain.addresses import canonical_tx_hash, canonical_wallet, checksum
from chain.fields import WalletFormField
from chain.models import Arbitrator, EventSyncCursor, Order, UserProfile
from tests import factories as f

# A real EIP-55 address (the USDT contract on Ethereum) in its three accepted spellings.
LOWER = "0xdac17f958d2ee523a2206206994597c13d831ec7"
CHECKSUMMED = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
UPPER = "0x" + LOWER[2:].upper()
# The checksummed address with one letter's case flipped: a typo EIP-55 exists to catch.
BAD_CHECKSUM = "0xdac17F958D2ee523a2206206994597C13D831ec7"

NOT_ADDRESSES = [
    "",
    "0x",
    "dac17f958d2ee523a2206206994597c13d831ec7",  # no 0x
    LOWER[:-1],  # 19.5 bytes
    LOWER + "00",  # 21 bytes
    "0xzac17f958d2ee523a2206206994597c13d831ec7",  # not hex
    "0X" + LOWER[2:],
    "0x" + "0" * 38 + "\n",
]


def _sql(query: str, params=()) -> list[tuple]:
    with connection.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description else []


def _refused(query: str, params=(), *, error=IntegrityError) -> str:
    """Run one statement that must fail; return the database's message (the savepoint keeps the test usable)."""
    with pytest.raises(error) as exc, transaction.atomic():
        _sql(query, params)
    return str(exc.value)


# ---------------------------------------------------------------- form level


def test_canonical_wallet_accepts_lower_upper_and_checksummed_forms():
    assert canonical_wallet(LOWER) == LOWER
    assert canonical_wallet(CHECKSUMMED) == LOWER
    assert canonical_wallet(UPPER) == LOWER
    assert canonical_wallet(f"  {CHECKSUMMED}\t") == LOWER
    assert checksum(LOWER) == CHECKSUMMED


@pytest.mark.parametrize("value", [*NOT_ADDRESSES, None, 42])
def test_canonical_wallet_refuses_non_addresses_naming_the_field(value):
    with pytest.raises(ValidationError) as exc:
        canonical_wallet(value, field="buyer_wallet")
    assert list(exc.value.message_dict) == ["buyer_wallet"]
    assert "40 hex digits" in exc.value.message_dict["buyer_wallet"][0]


def test_canonical_wallet_refuses_wrong_checksum_naming_the_field():
    with pytest.raises(ValidationError) as exc:
        canonical_wallet(BAD_CHECKSUM)
    assert list(exc.value.message_dict) == ["wallet"]
    assert "EIP-55 checksum" in exc.value.message_dict["wallet"][0]


def test_canonical_tx_hash_refuses_short_hash_and_lowercases_good_one():
    assert canonical_tx_hash("0x" + "AB" * 32) == "0x" + "ab" * 32
    with pytest.raises(ValidationError) as exc:
        canonical_tx_hash("0x" + "ab" * 31, field="last_tx_hash")
    assert list(exc.value.message_dict) == ["last_tx_hash"]


def test_wallet_form_field_cleans_to_lower_case():
    field = WalletFormField()
    assert field.clean(CHECKSUMMED) == LOWER
    assert field.clean(UPPER) == LOWER


@pytest.mark.parametrize("value", [LOWER[:-2], BAD_CHECKSUM, "0xnot-an-address"])
def test_wallet_form_field_refuses_bad_addresses(value):
    with pytest.raises(ValidationError) as exc:
        WalletFormField().clean(value)
    assert "EIP-55" in exc.value.messages[0] or "40 hex digits" in exc.value.messages[0]


def test_wallet_form_field_required_by_default():
    with pytest.raises(ValidationError):
        WalletFormField().clean("")
    assert WalletFormField(required=False).clean("") == ""


# ---------------------------------------------------------------- database level: CHECK constraints

@pytest.mark.django_db
@pytest.mark.parametrize("wallet", ["0x1234", "0x" + "g" * 40, "not a wallet", "0x" + "a" * 39 + "-", "0x" + "a" * 39,
                                    "0x" + "a" * 20 + "\n" + "a" * 19, "1x" + "a" * 40, "00" + "a" * 40, "0x",
                                    "ax" + "0" * 40, "0x" + "a" * 39 + "é"])
def test_user_profiles_check_refuses_non_address_wallet(wallet):
    message = _refused("INSERT INTO user_profiles (wallet) VALUES (%s)", [wallet])
    assert "user_profiles_wallet_canonical" in message
    assert not UserProfile.objects.exists()


@pytest.mark.django_db
def test_user_profiles_refuse_overlong_wallet():
    assert "character varying(42)" in _refused("INSERT INTO user_profiles (wallet) VALUES (%s)", ["0x" + "a" * 41],
                                               error=DataError)


@pytest.mark.django_db
def test_orm_create_bypassing_forms_refuses_bad_wallet():
    with pytest.raises(IntegrityError, match="user_profiles_wallet_canonical"), transaction.atomic():
        UserProfile.objects.create(wallet="0xdeadbeef")


@pytest.mark.django_db
@pytest.mark.parametrize("tx_hash", ["0x" + "a" * 63, "0x" + "a" * 63 + "g", "0y" + "a" * 64, "",
                                     "0x" + "a" * 62 + "\t" + "a"])
def test_orders_check_refuses_non_hash_tx_hash(tx_hash):
    order = f.order()
    for column in ("created_tx_hash", "last_tx_hash"):
        assert "orders_tx_hash_canonical" in _refused(f"UPDATE orders SET {column} = %s WHERE id = %s",
                                                      [tx_hash, order.pk], error=(IntegrityError, DataError))


@pytest.mark.django_db
def test_orders_check_refuses_negative_amount_naming_it():
    order = f.order()
    message = _refused("UPDATE orders SET amount = -1 WHERE id = %s", [order.pk])
    assert "orders_amount_valid" in message
    message = _refused("UPDATE orders SET platform_fee = -0.000001 WHERE id = %s", [order.pk])
    assert "orders_fee_valid" in message
    order.refresh_from_db()
    assert order.amount == Decimal("100")


@pytest.mark.django_db
def test_orm_create_refuses_negative_amount():
    with pytest.raises(IntegrityError, match="orders_amount_valid"), transaction.atomic():
        f.order(amount="-5")
    assert not Order.objects.exists()


@pytest.mark.django_db
def test_orders_refuse_non_numeric_amount():
    order = f.order()
    message = _refused("UPDATE orders SET amount = %s WHERE id = %s", ["ten", order.pk], error=DataError)
    assert "numeric" in message


@pytest.mark.django_db
def test_orders_refuse_infinite_amount():
    order = f.order()
    assert "infinite" in _refused("UPDATE orders SET amount = 'Infinity'::numeric WHERE id = %s", [order.pk],
                                  error=DataError)


@pytest.mark.django_db
def test_orders_refuse_nan_amount():
    order = f.order()
    _refused("UPDATE orders SET amount = 'NaN'::numeric WHERE id = %s", [order.pk], error=(IntegrityError, DataError))


@pytest.mark.django_db
def test_orders_check_refuses_a_malformed_chain_name_and_unknown_status():
    order = f.order()
    # Which chains exist is configuration (settings.CHAINS); the database refuses what cannot be a chain name.
    assert "orders_chain_valid" in _refused("UPDATE orders SET chain = 'Solana Mainnet' WHERE id = %s", [order.pk])
    assert "orders_status_valid" in _refused("UPDATE orders SET status = 'lost' WHERE id = %s", [order.pk])
    assert "orders_status_valid" in _refused("UPDATE orders SET status = 'COMPLETED' WHERE id = %s", [order.pk])
    order.refresh_from_db()
    assert (order.chain, order.status) == ("bsc", "completed")


@pytest.mark.django_db
def test_orm_create_refuses_unknown_status():
    with pytest.raises(IntegrityError, match="orders_status_valid"), transaction.atomic():
        f.order(status="pending")


@pytest.mark.django_db
def test_other_tables_refuse_a_malformed_chain_name():
    assert "arbitrators_chain_valid" in _refused(
        "INSERT INTO arbitrators (chain, wallet) VALUES ('TRON', %s)", [f.wallet()])
    assert "event_sync_cursor_chain_valid" in _refused(
        "INSERT INTO event_sync_cursor (chain) VALUES ('1tron')")
    assert not Arbitrator.objects.exists() and not EventSyncCursor.objects.exists()


@pytest.mark.django_db
def test_orders_check_refuses_bad_token_and_arbitrator_wallets():
    order = f.order()
    assert "orders_token_address_canonical" in _refused(
        "UPDATE orders SET token_address = '0x12' WHERE id = %s", [order.pk])
    assert "orders_arbitrator_wallet_canonical" in _refused(
        "UPDATE orders SET arbitrator_wallet = 'nobody' WHERE id = %s", [order.pk])
    assert "orders_tx_hash_canonical" in _refused(
        "UPDATE orders SET last_tx_hash = '0xabc' WHERE id = %s", [order.pk])


@pytest.mark.django_db
def test_user_profiles_check_refuses_unknown_tier_and_rating_out_of_range():
    profile = f.profile()
    assert "user_profiles_tier_valid" in _refused("UPDATE user_profiles SET tier = 'platinum' WHERE id = %s",
                                                   [profile.pk])
    assert "user_profiles_rating_range" in _refused("UPDATE user_profiles SET rating = 5.5 WHERE id = %s",
                                                     [profile.pk])


@pytest.mark.django_db
def test_blacklist_check_refuses_bad_wallet_empty_reason_and_unknown_source():
    assert "blacklist_wallet_canonical" in _refused(
        "INSERT INTO blacklist (wallet, reason, source) VALUES ('0x1', 'x', 'manual')")
    assert "blacklist_reason_required" in _refused(
        "INSERT INTO blacklist (wallet, reason, source) VALUES (%s, '', 'manual')", [f.wallet()])
    assert "blacklist_source_valid" in _refused(
        "INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'x', 'rumour')", [f.wallet()])
    assert _sql("SELECT count(*) FROM blacklist") == [(0,)]


# ---------------------------------------------------------------- database level: canonical-wallet triggers


@pytest.mark.django_db
@pytest.mark.parametrize("spelling", [CHECKSUMMED, UPPER])
def test_user_profiles_raw_insert_stores_wallet_lower_case(spelling):
    _sql("INSERT INTO user_profiles (wallet) VALUES (%s)", [spelling])
    assert list(UserProfile.objects.values_list("wallet", flat=True)) == [LOWER]


@pytest.mark.django_db
def test_orders_raw_insert_stores_arbitrator_and_token_lower_case():
    buyer, seller = f.profile(), f.profile()
    arbitrator = "0x" + "AbCdEf0123" * 4
    _sql("""INSERT INTO orders (chain, onchain_id, buyer_wallet, seller_wallet, arbitrator_wallet, token_address,
                                amount, created_tx_hash, last_tx_hash)
            VALUES ('bsc', 1, %s, %s, %s, %s, 10, %s, %s)""",
         [buyer.wallet.upper().replace("0X", "0x"), seller.wallet, arbitrator, CHECKSUMMED,
          "0x" + "AB" * 32, "0x" + "CD" * 32])
    order = Order.objects.get()
    assert order.arbitrator_wallet == arbitrator.lower()
    assert order.token_address == LOWER
    assert order.buyer_id == buyer.wallet
    assert (order.created_tx_hash, order.last_tx_hash) == ("0x" + "ab" * 32, "0x" + "cd" * 32)


@pytest.mark.django_db
def test_orders_raw_update_stores_wallets_lower_case():
    order = f.order()
    _sql("UPDATE orders SET arbitrator_wallet = %s, token_address = %s WHERE id = %s", [UPPER, CHECKSUMMED, order.pk])
    order.refresh_from_db()
    assert (order.arbitrator_wallet, order.token_address) == (LOWER, LOWER)


@pytest.mark.django_db
def test_blacklist_raw_insert_stores_wallet_lower_case():
    _sql("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'High dispute rate', 'manual')", [CHECKSUMMED])
    assert _sql("SELECT wallet FROM blacklist") == [(LOWER,)]


@pytest.mark.django_db
def test_arbitrators_raw_insert_stores_wallet_lower_case():
    _sql("INSERT INTO arbitrators (chain, wallet) VALUES ('ethereum', %s)", [CHECKSUMMED])
    assert Arbitrator.objects.get().wallet == LOWER


@pytest.mark.django_db
def test_orm_lookup_by_checksummed_wallet_finds_the_profile():
    profile = f.profile(CHECKSUMMED)
    assert profile.wallet == CHECKSUMMED  # the Python object keeps what it was given ...
    profile.refresh_from_db()
    assert profile.wallet == LOWER  # ... the database stored the canonical form
    assert UserProfile.objects.get(wallet=UPPER) == profile
