"""Sanctions screening on real PostgreSQL (disputes.sanctions.services): every wallet the mirror meets is queued by a
trigger and screened; a list version is re-screened against every wallet ever seen at once; a hit blacklists with its
evidence, flags the open orders and disputes, opens a review flag and pages (P1); nothing is ever lifted by itself;
the runbook's raw INSERT INTO blacklist still works beside the new source."""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from chain.models import OrderStatus, UserProfile
from disputes.models import (
    Blacklist,
    ReviewFlag,
    SanctionsHit,
    SanctionsHitOrder,
    SanctionsListVersion,
    SanctionsScreening,
)
from disputes.sanctions import services
from disputes.sanctions.services import import_sanctions_list, screen_new_wallets
from tests import factories as f

pytestmark = pytest.mark.django_db

DATA = Path(__file__).parent / "data"
ETH_LIST = (DATA / "sanctioned_addresses_ETH.txt").read_bytes()
LISTED = "0x7f367cc41522ce07553e823bf3be79a889debe1b"  # on the sample list


def _import(data: bytes, **kwargs) -> SanctionsListVersion:
    return import_sanctions_list(actor="system:test", data=data, source="sanctioned_addresses_ETH.txt", **kwargs)


def _with(data: bytes, *wallets: str) -> bytes:
    return data + "".join(f"{w}\n" for w in wallets).encode()


# ---------------------------------------------------------------------------- the queue


def test_every_wallet_the_mirror_meets_is_queued_whatever_writes_it():
    order = f.order()  # the ORM
    arbitrator = f.arbitrator()
    with connection.cursor() as cur:  # the sync's raw SQL (chain.mirror.write_profiles)
        cur.execute("INSERT INTO user_profiles (wallet, first_seen_chain, first_seen_block) VALUES (%s, 'bsc', 7) "
                    "ON CONFLICT (wallet) DO UPDATE SET last_active_at = now()", [f.wallet(0x5EE)])
    pending = dict(SanctionsScreening.objects.pending().values_list("wallet", "chain"))
    assert set(pending) == {order.buyer_id, order.seller_id, arbitrator.wallet, f.wallet(0x5EE)}
    assert pending[f.wallet(0x5EE)] == "bsc" and pending[arbitrator.wallet] == "bsc"


def test_a_wallet_met_again_after_a_reset_is_queued_again(no_chain):
    profile = f.profile()
    assert screen_new_wallets().screened == 1
    UserProfile.objects.filter(pk=profile.pk).delete()  # a reorg's rollback, or a fresh local chain
    f.profile(profile.wallet)
    assert SanctionsScreening.objects.pending().filter(wallet=profile.wallet).exists()


def test_new_wallets_are_screened_against_the_current_lists_and_a_listed_one_is_hit(no_chain,
                                                                                   django_capture_on_commit_callbacks):
    version = _import(ETH_LIST)
    buyer = f.profile(LISTED)
    open_order = f.order(buyer=buyer, status=OrderStatus.FUNDED, amount="1500", token_symbol="USDT")
    dispute = f.order(seller=buyer, status=OrderStatus.DISPUTED, amount="20", token_symbol="USDC",
                      arbitrator_wallet=f.wallet(0xA1))
    f.order(buyer=buyer, status=OrderStatus.COMPLETED)  # closed: not flagged

    with django_capture_on_commit_callbacks(execute=True):
        result = screen_new_wallets()

    assert result.screened == SanctionsScreening.objects.count() and not SanctionsScreening.objects.pending().exists()
    [hit] = result.hits
    assert (hit.wallet, hit.source, hit.version, hit.roles) == (LISTED, "list", version, ["buyer", "seller"])
    entry = Blacklist.objects.active().get(wallet=LISTED)
    assert entry.source == "sanctions" and f"version #{version.pk}" in entry.reason and hit.blacklist == entry
    assert UserProfile.objects.get(wallet=LISTED).is_blacklisted
    assert sorted(SanctionsHitOrder.objects.values_list("onchain_id", "role", "status")) == sorted([
        (open_order.onchain_id, "buyer", "funded"), (dispute.onchain_id, "seller", "disputed")])
    assert hit.open_orders == 2 and {k: Decimal(v) for k, v in hit.escrowed.items()} == {
        "USDT": Decimal(1500), "USDC": Decimal(20)}
    flag = ReviewFlag.objects.get(wallet=LISTED, role="sanctions", resolved_at__isnull=True)
    assert hit.flag == flag and flag.disputes == 1
    alert = Alert.objects.get(key=f"sanctions-hit:{LISTED}")
    assert alert.severity == "P1" and "2 open order(s) flagged" in alert.title
    audited = set(AuditLog.objects.values_list("action", "object_type", "object_id"))
    assert {("blacklist_wallet", "disputes.blacklist", str(entry.pk)),
            ("record_sanctions_hit", "disputes.sanctionshit", str(hit.pk)),
            ("flag_for_review", "disputes.reviewflag", str(flag.pk))} <= audited
    assert SanctionsScreening.objects.get(wallet=LISTED).listed is True
    assert SanctionsScreening.objects.filter(listed=False).count() == result.screened - 1


def test_screening_twice_at_once_screens_once(no_chain):
    f.profile()
    with connection.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(hashtext('sanctions-screening'))")
    try:
        # The lock is the session's: another connection's run finds it taken.
        result = {}
        thread = threading.Thread(target=lambda: result.update(r=screen_new_wallets()) or connection.close())
        thread.start()
        thread.join()
        assert result["r"].skipped == "locked"
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(hashtext('sanctions-screening'))")


# ---------------------------------------------------------------------------- a new list version


def test_new_version_naming_a_wallet_with_an_open_order_blacklists_flags_and_pages(no_chain,
                                                                                   django_capture_on_commit_callbacks):
    _import(ETH_LIST)
    ours = f.profile()
    order = f.order(seller=ours, status=OrderStatus.DELIVERED, amount="250.5")
    arbitrator = f.arbitrator(address=f.wallet(0xA7B))  # only ever an arbitrator: a wallet we have seen all the same
    disputed = f.order(status=OrderStatus.DISPUTED, arbitrator_wallet=arbitrator.wallet)
    bystander = f.profile()

    with django_capture_on_commit_callbacks(execute=True):
        version = _import(_with(ETH_LIST, ours.wallet, arbitrator.wallet))

    assert (version.added_count, version.hit_count) == (2, 2) and version.rescreened_at is not None
    hits = {h.wallet: h for h in SanctionsHit.objects.filter(version=version)}
    assert set(hits) == {ours.wallet, arbitrator.wallet}
    assert hits[arbitrator.wallet].roles == ["arbitrator"]
    assert list(hits[ours.wallet].orders.values_list("onchain_id", "role")) == [(order.onchain_id, "seller")]
    assert list(hits[arbitrator.wallet].orders.values_list("onchain_id", "role")) == [(disputed.onchain_id,
                                                                                       "arbitrator")]
    assert set(Blacklist.objects.active().filter(source="sanctions").values_list("wallet", flat=True)) == set(hits)
    assert not Blacklist.objects.filter(wallet=bystander.wallet).exists()
    assert Alert.objects.get(key=f"sanctions-list:{version.pk}").severity == "P1"
    assert AuditLog.objects.get(action="import_sanctions_list", object_id=str(version.pk)).after["hits"] == sorted(hits)

    # Nothing lifts them later by itself: a version no longer naming them, the expiry job, another screening.
    from disputes.services import lift_expired_blacklist_entries

    _import(ETH_LIST)
    assert lift_expired_blacklist_entries(now=timezone.now() + timedelta(days=3650)) == 0
    screen_new_wallets()
    assert not AuditLog.objects.filter(action="lift_blacklist_entry").exists()
    assert set(Blacklist.objects.active().filter(source="sanctions").values_list("wallet", flat=True)) == set(hits)


def test_a_wallet_leaving_the_list_stays_blacklisted_and_a_review_flag_asks_staff_to_lift_it():
    ours = f.profile()
    listing = _import(_with(ETH_LIST, ours.wallet))
    assert listing.hit_count == 1

    dropped = _import(ETH_LIST)  # the next version no longer names it

    assert dropped.removed_count == 1
    assert Blacklist.objects.active().get(wallet=ours.wallet).source == "sanctions", "never lifted by itself"
    flag = ReviewFlag.objects.get(wallet=ours.wallet, role="delisted", resolved_at__isnull=True)
    assert f"version #{dropped.pk}" in flag.reason and "until staff lift it" in flag.reason
    assert AuditLog.objects.filter(action="flag_for_review", object_id=str(flag.pk)).exists()
    assert not AuditLog.objects.filter(action="lift_blacklist_entry").exists()


def test_a_wallet_already_blacklisted_by_hand_keeps_its_entry_and_is_still_hit(staff_user):
    from disputes.services import blacklist_wallet

    ours = f.profile()
    manual = blacklist_wallet(actor=staff_user, wallet=ours.wallet, reason="chargeback fraud")
    version = _import(_with(ETH_LIST, ours.wallet))
    hit = SanctionsHit.objects.get(version=version)
    assert hit.blacklist == manual and Blacklist.objects.filter(wallet=ours.wallet).count() == 1


def test_a_wallet_banned_for_a_while_before_its_hit_is_never_lifted_by_the_expiry(staff_user):
    from disputes.services import blacklist_wallet, lift_expired_blacklist_entries

    ours = f.profile()
    until = timezone.now() + timedelta(days=7)
    entry = blacklist_wallet(actor=staff_user, wallet=ours.wallet, reason="chargeback, a week", expires_at=until)
    version = _import(_with(ETH_LIST, ours.wallet))

    entry.refresh_from_db()
    assert entry.expires_at is None and SanctionsHit.objects.get(version=version).blacklist == entry
    kept = AuditLog.objects.get(action="keep_blacklist_entry", object_id=str(entry.pk))
    assert kept.before["expires_at"] and kept.after == {"expires_at": None} and f"version #{version.pk}" in kept.reason
    assert lift_expired_blacklist_entries(now=until + timedelta(days=1)) == 0
    assert Blacklist.objects.active().get(wallet=ours.wallet) == entry

    dropped = _import(ETH_LIST)  # leaving the list: staff are asked to lift the entry the hit kept, as for any other
    assert ReviewFlag.objects.filter(wallet=ours.wallet, role="delisted", resolved_at__isnull=True).exists()
    assert Blacklist.objects.active().get(wallet=ours.wallet) == entry and dropped.removed_count == 1


def test_staff_cannot_lift_a_wallet_a_current_list_names_until_a_version_drops_it(staff_user):
    from django.core.exceptions import ValidationError

    from disputes.services import blacklist_wallet, lift_blacklist_entry

    ours = f.profile()
    manual = blacklist_wallet(actor=staff_user, wallet=ours.wallet, reason="chargeback fraud")
    version = _import(_with(ETH_LIST, ours.wallet))  # the hit keeps the entry staff made for another reason

    with pytest.raises(ValidationError) as refused:
        lift_blacklist_entry(actor=staff_user, entry=manual, reason="chargeback settled")
    message = str(refused.value)
    assert "named by the current sanctions list (" in message and f"{version.list_key} version #{version.pk}" in message
    assert Blacklist.objects.active().get(wallet=ours.wallet) == manual
    assert not AuditLog.objects.filter(action="lift_blacklist_entry").exists()

    _import(ETH_LIST)  # the next version drops it: staff may lift it now (the delisted flag asks them to)
    lifted = lift_blacklist_entry(actor=staff_user, entry=manual, reason="delisted by OFAC")
    assert lifted.lifted_at and AuditLog.objects.filter(action="lift_blacklist_entry").count() == 1


def test_screening_waits_while_a_list_version_is_imported(no_chain):
    f.profile()
    _import(ETH_LIST)  # its transaction (the test's) is still open: a wallet met now must wait for it to commit
    result = {}
    thread = threading.Thread(target=lambda: result.update(r=screen_new_wallets()) or connection.close())
    thread.start()
    thread.join()
    assert result["r"].skipped == "locked"


def test_rescreen_is_one_set_operation_whatever_the_number_of_wallets():
    _import(ETH_LIST)
    wallets = [f.wallet(0xC0000 + i) for i in range(300)]
    with connection.cursor() as cur:
        cur.execute("INSERT INTO user_profiles (wallet) SELECT unnest(%s::text[])", [wallets])
    version = SanctionsListVersion.objects.create(
        list_key="ofac-ETH", source="x", format="address_list", sha256="0" * 64, entry_count=0,
        previous=SanctionsListVersion.objects.get())
    with CaptureQueriesContext(connection) as queries:
        assert services.rescreen_list_version(version) == []
    assert len(queries) == 1


# ---------------------------------------------------------------------------- the runbook and the admin forms


def test_raw_runbook_insert_into_blacklist_still_works_beside_the_sanctions_source():
    checksummed = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    f.profile(checksummed.lower())
    _import(_with(ETH_LIST, f.profile().wallet))  # a sanctions entry exists beside it
    with connection.cursor() as cur:
        cur.execute("INSERT INTO blacklist (wallet, reason, source) VALUES (%s, 'RB-04 repeat seller', 'manual')",
                    [checksummed])
    entry = Blacklist.objects.get(wallet=checksummed.lower())
    assert (entry.source, entry.lifted_at) == ("manual", None)
    assert UserProfile.objects.get(wallet=checksummed.lower()).is_blacklisted
    assert Blacklist.objects.filter(source="sanctions").count() == 1


def test_staff_cannot_pick_the_sanctions_source_by_hand():
    from disputes.forms import BlacklistAddForm
    from disputes.imports import parse_blacklist_csv

    assert "sanctions" not in dict(BlacklistAddForm.base_fields["source"].choices)
    parsed = parse_blacklist_csv(f"wallet,reason,source\n{f.wallet()},listed,sanctions\n")
    assert parsed.errors == ["line 2: unknown source 'sanctions': use manual, automatic or import."]


# ---------------------------------------------------------------------------- the daily refresh


class _ListServer:
    """Serves `body` over HTTP GET with a Last-Modified header, as a list's host does."""

    def __init__(self):
        self.body = b""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                self.send_response(200)
                self.send_header("Content-Length", str(len(owner.body)))
                self.send_header("Last-Modified", "Fri, 27 Nov 2026 14:03:00 GMT")
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sanctioned_addresses_ETH.txt"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def list_server(settings):
    server = _ListServer()
    settings.SANCTIONS_LIST_URLS = [server.url]
    yield server
    server.close()


def test_refresh_imports_a_changed_list_and_only_notes_an_unchanged_one(list_server):
    from disputes.sanctions.selectors import refresh_age_seconds

    list_server.body = ETH_LIST
    first = services.refresh_sanctions_lists()
    [version] = first.imported
    assert version.source == list_server.url and version.published_at.isoformat() == "2026-11-27T14:03:00+00:00"
    SanctionsListVersion.objects.filter(pk=version.pk).update(last_seen_at=version.last_seen_at.replace(year=2025))
    assert refresh_age_seconds() > 48 * 3600

    again = services.refresh_sanctions_lists()
    assert again.unchanged == [version] and SanctionsListVersion.objects.count() == 1
    assert refresh_age_seconds() < 60, "the same file still served: the list is fresh"


def test_refresh_refused_for_shrinking_pages_p2_and_imports_nothing(list_server):
    list_server.body = ETH_LIST
    services.refresh_sanctions_lists()
    list_server.body = b"\n".join(ETH_LIST.split(b"\n")[:3]) + b"\n"
    result = services.refresh_sanctions_lists()
    assert "more than a fifth" in result.failed[list_server.url]
    alert = Alert.objects.get(key=f"sanctions-list-refused:{list_server.url}")
    assert alert.severity == "P2" and "Import it by hand" in alert.message
    assert SanctionsListVersion.objects.count() == 1


def test_refresh_does_nothing_while_no_url_is_set(settings):
    settings.SANCTIONS_LIST_URLS = []
    result = services.refresh_sanctions_lists()
    assert (result.imported, result.unchanged, result.failed) == ([], [], {})


def test_refresh_of_a_file_first_imported_by_hand_is_fresh_not_refused(list_server):
    from disputes.sanctions.selectors import refresh_age_seconds

    by_hand = _import(ETH_LIST)  # the same bytes, from a file, before the URL was configured
    list_server.body = ETH_LIST
    result = services.refresh_sanctions_lists()
    assert result.unchanged == [by_hand] and result.failed == {}
    assert not Alert.objects.filter(key__startswith="sanctions-list-refused").exists()
    assert refresh_age_seconds() < 60
