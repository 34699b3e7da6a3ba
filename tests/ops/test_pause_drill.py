"""The pause drill on a fork of a real local anvil: the escrow drained on the fork, the insolvency confirmed at a
later block, paused() true there, the blocks and seconds kept; the chain itself untouched. A drill that cannot fork
fails with the reason and a P2; a chain without a recent passed drill raises a P2 until one passes."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backoffice.alerts.models import Alert
from backoffice.audit.models import AuditLog
from backoffice.devservices import free_port
from chain.sync import sync_chain
from ops.models import DrillRun, DrillStatus
from ops.monitoring import drills

from .custody_fixtures import *  # noqa: F403 - fixtures

pytestmark = [pytest.mark.anvil, pytest.mark.django_db]


@pytest.fixture
def fast_blocks(settings):
    """The fork mines every 0.2 s: the drill's blocks pass quickly."""
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"], "block_time": 0.2}}


def test_pause_drill_pauses_the_fork_within_a_few_blocks_and_leaves_the_chain_alone(guarded, fast_blocks):
    node = guarded
    node.create_order()
    sync_chain("bsc")
    held = node.balance("USDT", node.escrow.address)
    run = drills.run_pause_drill(actor="system:test", chain="bsc", timeout=60)
    assert run.status == DrillStatus.PASSED, run.error
    assert run.fork_block is not None and run.drain_block > run.fork_block
    assert run.detected_block > run.drain_block, "confirmed only at a later block than the first sight"
    assert run.paused_block >= run.detected_block and run.pause_blocks == run.paused_block - run.drain_block
    assert 2 <= run.pause_blocks <= 6 and run.pause_seconds > 0
    texts = [step["text"] for step in run.steps]
    assert any("seen once" in t for t in texts) and any("pause sent by the server's guardian key" in t for t in texts)
    assert not node.escrow.functions.paused().call() and node.balance("USDT", node.escrow.address) == held
    assert AuditLog.objects.filter(action="run_pause_drill", object_id=str(run.pk)).exists()
    assert not Alert.objects.filter(severity__in=["P0", "P1"]).exists(), "a drill pages nobody"


def test_pause_drill_without_the_guardian_key_impersonates_a_guardian_and_says_so(safe_chain, fast_blocks):
    safe_chain.create_order()
    sync_chain("bsc")
    run = drills.run_pause_drill(actor="system:test", chain="bsc", timeout=60)
    assert run.status == DrillStatus.PASSED, run.error
    texts = [step["text"] for step in run.steps]
    assert any("no guardian key: the automatic pause could not send on the chain itself (GUARDIAN_KEY)" in t
               for t in texts)
    assert any("pause sent by an impersonated guardian" in t for t in texts)


def test_pause_drill_that_cannot_fork_fails_with_the_reason_and_a_p2(safe_chain, settings):
    sync_chain("bsc")
    settings.CHAINS = {**settings.CHAINS, "bsc": {**settings.CHAINS["bsc"],
                                                  "rpc_url": f"http://127.0.0.1:{free_port()}"}}
    run = drills.run_pause_drill(actor="system:test", chain="bsc", timeout=30)
    assert run.status == DrillStatus.FAILED and "could not fork bsc" in run.error
    alert = Alert.objects.get(key="pause-drill:bsc")
    assert alert.severity == "P2" and f"Drill #{run.pk}" in alert.message


def test_pause_drill_whose_guardian_key_does_not_decrypt_fails_with_the_reason_and_a_p2(safe_chain, fast_blocks,
                                                                                        settings, tmp_path):
    from chain.transactions import reset_signer

    settings.GUARDIAN_KEY, settings.GUARDIAN_KEYSTORE = "", str(tmp_path / "missing.json")
    reset_signer()
    safe_chain.create_order()
    sync_chain("bsc")
    run = drills.run_pause_drill(actor="system:test", chain="bsc", timeout=60)
    reset_signer()
    assert run.status == DrillStatus.FAILED and "GUARDIAN_KEYSTORE points to" in run.error
    assert run.finished_at is not None and Alert.objects.get(key="pause-drill:bsc").severity == "P2"


def test_check_pause_drills_raises_a_p2_without_a_recent_passed_drill_and_clears_after_one(guarded):
    assert drills.check_pause_drills() == ["pause-drill-old:bsc"]
    assert "Never drilled" in Alert.objects.get(key="pause-drill-old:bsc").message
    old = DrillRun.objects.create(chain="bsc", status="passed", actor_label="t", paused_block=9,
                                  started_at=timezone.now() - timedelta(days=31))
    assert drills.check_pause_drills() == ["pause-drill-old:bsc"]
    DrillRun.objects.filter(pk=old.pk).update(started_at=timezone.now() - timedelta(days=3))
    assert drills.check_pause_drills() == []
    assert Alert.objects.get(key="pause-drill-old:bsc").state == "resolved"


def test_pause_drill_button_for_ops_admins_only_queues_it_audited(client, django_user_model, monkeypatch, safe_chain,
                                                                  django_capture_on_commit_callbacks):
    from django.contrib.auth.models import Group

    sent = []
    monkeypatch.setattr(drills, "send_task", lambda name, **kwargs: sent.append((name, kwargs)))
    viewer = django_user_model.objects.create_user("vera", is_staff=True)
    viewer.groups.set([Group.objects.get(name="viewer")])
    admin_user = django_user_model.objects.create_user("olga", is_staff=True)
    admin_user.groups.set([Group.objects.get(name="ops admin")])

    client.force_login(viewer)
    assert 'href="/admin/ops/drillrun/run/"' not in client.get("/admin/ops/drillrun/").content.decode()
    assert client.post("/admin/ops/drillrun/run/", {"chain": "bsc"}).status_code == 403
    client.force_login(admin_user)
    assert 'href="/admin/ops/drillrun/run/"' in client.get("/admin/ops/drillrun/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post("/admin/ops/drillrun/run/", {"chain": "bsc"})
    assert response.status_code == 302 and response["Location"] == "/admin/ops/drillrun/"
    assert sent == [("ops.tasks.run_pause_drill", {"chain": "bsc", "actor": "olga (button)"})]
    assert AuditLog.objects.get(action="request_pause_drill").actor_label == "olga"


def test_pause_drill_figures_reach_the_metrics(db):
    from ops.monitoring import metrics

    DrillRun.objects.create(chain="bsc", status="passed", actor_label="t", paused_block=20, pause_blocks=9,
                            pause_seconds=6.5, started_at=timezone.now() - timedelta(hours=2))
    families = {f.name: f for f in metrics._drills()}
    samples = {(f.name, s.labels["chain"]): s.value for f in families.values() for s in f.samples}
    assert samples[("p2p_pause_drill_pause_blocks", "bsc")] == 9.0
    assert samples[("p2p_pause_drill_pause_seconds", "bsc")] == 6.5
    assert 7100 < samples[("p2p_pause_drill_last_passed_age_seconds", "bsc")] < 7300
    assert samples[("p2p_pause_drill_last_passed_age_seconds", "ethereum")] == float("inf"), "never drilled"
