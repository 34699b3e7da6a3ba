"""seed_demo fills the mirror with realistic, consistent data, and refuses to clobber what is there."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Count, F, Max, Min, Q

from chain.models import Arbitrator, EventSyncCursor, Order, OrderStatus, UserProfile
from chain.seeding import SEED_CHAINS
from disputes.models import Blacklist
from tests import factories as f

pytestmark = pytest.mark.django_db

N = 3000


@pytest.fixture
def seeded():
    out = StringIO()
    call_command("seed_demo", "--orders", str(N), stdout=out)
    return out.getvalue()


def test_seed_demo_writes_the_requested_orders(seeded):
    assert Order.objects.count() == N
    assert f"Seeded {N:,} orders" in seeded


def test_seed_demo_covers_every_status(seeded):
    assert set(Order.objects.values_list("status", flat=True).distinct()) == set(OrderStatus.values)


def test_seed_demo_disputed_share_is_between_5_and_10_percent(seeded):
    disputed = Order.objects.filter(status__in=[OrderStatus.DISPUTED, OrderStatus.RESOLVED_BUYER,
                                                OrderStatus.RESOLVED_SELLER]).count()
    assert 0.05 * N <= disputed <= 0.10 * N


def test_seed_demo_disputes_have_arbitrator_and_time(seeded):
    disputes = Order.objects.filter(status__in=[OrderStatus.DISPUTED, OrderStatus.RESOLVED_BUYER,
                                                OrderStatus.RESOLVED_SELLER])
    assert disputes.exists()
    assert not disputes.filter(Q(arbitrator_wallet__isnull=True) | Q(disputed_at__isnull=True)).exists()
    assert not disputes.filter(disputed_at__lt=F("created_at")).exists()
    # Every assigned arbitrator is a member of the order's chain's pool.
    with connection.cursor() as cur:
        cur.execute("""SELECT count(*) FROM orders o WHERE arbitrator_wallet IS NOT NULL AND NOT EXISTS
                       (SELECT 1 FROM arbitrators a WHERE a.chain = o.chain AND a.wallet = o.arbitrator_wallet)""")
        assert cur.fetchone()[0] == 0


def test_seed_demo_spans_sixty_days_on_both_chains_and_several_tokens(seeded):
    span = Order.objects.aggregate(first=Min("created_at"), last=Max("created_at"))
    assert timedelta(days=58) <= span["last"] - span["first"] <= timedelta(days=60)
    by_chain = dict(Order.objects.values_list("chain").annotate(n=Count("id")))
    assert set(by_chain) == set(SEED_CHAINS) and min(by_chain.values()) > N * 0.1
    assert Order.objects.values("token_symbol").distinct().count() >= 3
    assert Order.objects.values("chain", "token_address").distinct().count() >= 4


def test_seed_demo_orders_are_consistent(seeded):
    assert not Order.objects.filter(Q(amount__lt=0) | Q(platform_fee__lt=0)).exists()
    assert not Order.objects.filter(buyer=F("seller")).exists()
    assert not Order.objects.filter(updated_at__lt=F("created_at")).exists()
    closed = Order.objects.exclude(status__in=[OrderStatus.FUNDED, OrderStatus.DELIVERED, OrderStatus.DISPUTED])
    assert not closed.filter(Q(closed_at__isnull=True) | Q(close_reason__isnull=True)).exists()


def test_seed_demo_arbitrators_have_varied_reputation(seeded):
    assert Arbitrator.objects.filter(reputation__lt=20).exists()
    assert Arbitrator.objects.at_risk().exists()
    assert Arbitrator.objects.filter(reputation__gte=50).exists()
    assert set(Arbitrator.objects.values_list("chain", flat=True).distinct()) == set(SEED_CHAINS)


def test_seed_demo_blacklisted_wallets_are_flagged_on_profiles(seeded):
    wallets = set(Blacklist.objects.active().values_list("wallet", flat=True))
    assert len(wallets) >= 3
    assert set(UserProfile.objects.blacklisted().values_list("wallet", flat=True)) == wallets


def test_seed_demo_writes_a_cursor_per_chain(seeded):
    cursors = {c.chain: c for c in EventSyncCursor.objects.all()}
    assert set(cursors) == set(SEED_CHAINS)
    for chain, cursor in cursors.items():
        assert cursor.last_block >= Order.objects.filter(chain=chain).aggregate(m=Max("last_block"))["m"]


def test_seed_demo_refuses_non_empty_database_without_reset():
    f.order()
    with pytest.raises(CommandError, match="--reset"):
        call_command("seed_demo", "--orders", "10")
    assert Order.objects.count() == 1


def test_seed_demo_if_empty_leaves_existing_data_alone():
    existing = f.order()
    out = StringIO()
    call_command("seed_demo", "--orders", "10", "--if-empty", stdout=out)
    assert list(Order.objects.all()) == [existing]
    assert "nothing seeded" in out.getvalue()


def test_seed_demo_reset_replaces_existing_data():
    existing = f.order()
    call_command("seed_demo", "--orders", "50", "--reset", stdout=StringIO())
    assert Order.objects.count() == 50
    assert not Order.objects.filter(pk=existing.pk).exists()


@pytest.mark.parametrize("orders", ["0", "-5"])
def test_seed_demo_refuses_non_positive_order_count(orders):
    with pytest.raises(CommandError, match="--orders must be a positive number"):
        call_command("seed_demo", "--orders", orders)
    assert not Order.objects.exists()


def test_seed_demo_is_repeatable_with_a_seed():
    call_command("seed_demo", "--orders", "30", "--seed", "3", stdout=StringIO())
    first = list(Order.objects.order_by("chain", "onchain_id").values_list("chain", "onchain_id", "buyer_id",
                                                                          "amount", "status"))
    call_command("seed_demo", "--orders", "30", "--seed", "3", "--reset", stdout=StringIO())
    again = list(Order.objects.order_by("chain", "onchain_id").values_list("chain", "onchain_id", "buyer_id",
                                                                          "amount", "status"))
    assert first == again


@pytest.mark.django_db
def test_seed_reset_leaves_no_raw_events_or_block_hashes_of_an_earlier_sync():
    from chain.models import BlockHash, ChainEvent
    from chain.seeding import reset

    ChainEvent.objects.create(chain="bsc", block_number=5, block_hash="0x" + "1" * 64,
                              block_time=datetime.now(timezone.utc), tx_hash="0x" + "2" * 64, log_index=0,
                              address="0x" + "3" * 40, contract="escrow", event="OrderCreated", order_id=1, args={})
    BlockHash.objects.create(chain="bsc", number=5, hash="0x" + "1" * 64)
    reset()
    assert not ChainEvent.objects.exists() and not BlockHash.objects.exists()
