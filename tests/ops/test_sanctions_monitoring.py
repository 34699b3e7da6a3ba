"""Sanctions screening in monitoring: the dashboard tile (unhandled hits, list age), /metrics, and the
SanctionsListStale rule's metric, exported only while SANCTIONS_LIST_URL is set."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone

from disputes.models import SanctionsListVersion, SanctionsOracleCheck
from disputes.sanctions.services import import_sanctions_list
from ops.monitoring import dashboard
from tests import factories as f
from tests.ops.test_metrics import metrics_setup, scrape  # noqa: F401 - the token fixture and the scrape helper

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_chain")]

ETH_LIST = (Path(__file__).resolve().parents[1] / "disputes" / "data" / "sanctioned_addresses_ETH.txt").read_bytes()
URL = "https://lists.example.org/sanctioned_addresses_ETH.txt"


def _import(*wallets: str, source: str = "sanctioned_addresses_ETH.txt") -> SanctionsListVersion:
    return import_sanctions_list(actor="system:test", data=ETH_LIST + "".join(f"{w}\n" for w in wallets).encode(),
                                 source=source)


def _tile():
    return next(t for t in dashboard.tiles() if t.key == "sanctions")


def test_tile_warns_before_any_list_is_imported():
    tile = _tile()
    assert (tile.value, tile.status, tile.detail) == (0, "warning", "no list imported")
    assert tile.url == reverse("admin:disputes_sanctionslistversion_changelist")


def test_tile_is_red_while_a_hit_is_not_handled_and_counts_the_queue():
    f.profile()
    _import(f.profile().wallet)
    tile = _tile()
    assert (tile.value, tile.status) == (1, "error")
    assert tile.detail.startswith("lists confirmed 0 s ago") and tile.detail.endswith("2 wallet(s) waiting")


def test_tile_warns_when_the_configured_list_was_not_refreshed_for_48_hours(settings):
    settings.SANCTIONS_LIST_URLS = [URL]
    version = _import(source=URL)
    assert _tile().status == "ok"
    SanctionsListVersion.objects.filter(pk=version.pk).update(last_seen_at=timezone.now() - timedelta(hours=49))
    tile = _tile()
    assert tile.status == "warning" and tile.detail.startswith("lists confirmed 2 d 1 h ago")


def test_metrics_export_list_freshness_hits_queue_and_oracles(client, settings):
    settings.SANCTIONS_LIST_URLS = [URL]
    assert scrape(client)[("sanctions_list_refresh_age_seconds", ())] == float("inf"), "never imported: the rule fires"
    _import(f.profile().wallet, source=URL)
    f.profile()
    SanctionsOracleCheck.objects.create(chain="bsc", oracle=f.wallet(0x0AC1), last_checked_at=timezone.now(),
                                        last_block=10, last_error="timeout", last_error_at=timezone.now())
    m = scrape(client)
    assert m[("sanctions_list_refresh_age_seconds", ())] < 60
    assert m[("sanctions_list_entries", (("list", "ofac-ETH"),))] == 11
    assert m[("sanctions_hits_unhandled", ())] == 1 and m[("sanctions_hits_total", (("source", "list"),))] == 1
    assert m[("sanctions_wallets_pending", ())] == 2 and m[("sanctions_screening_oldest_pending_seconds", ())] >= 0
    assert m[("sanctions_oracle_failing", (("chain", "bsc"),))] == 1
    assert m[("sanctions_oracle_last_check_age_seconds", (("chain", "bsc"),))] < 60


def test_metrics_leave_the_refresh_age_out_while_no_url_is_set(client, settings):
    settings.SANCTIONS_LIST_URLS = []
    names = {name for name, _ in scrape(client)}
    assert "sanctions_list_refresh_age_seconds" not in names and "sanctions_hits_unhandled" in names
