"""The authorization matrix: every role, anonymous, a signed-in non-staff user and a superuser, against every admin
URL and changelist action, GET and POST, each cell asserted on its own.

EXPECTED below is written from the roles' permission lists (ops/migrations/0008_roles.py) and the design rules
(the chain mirror, the audit log and device/attempt records are read-only; blacklist entries are lifted, never
edited or deleted; contract actions go through their own pages), not read from the admin code. A test checks
that the table covers every URL and action the admin registry offers, so a new page cannot go unlisted.

Allowed: 200, or a redirect to a page other than the login page (an action redirects back to its changelist).
Denied: for anonymous and non-staff users a redirect to the login page; for staff 403 (404 for an app index
the user has no model of, Django's answer; 405 for a method a view does not take), and an action that is not
offered ("No action selected."). A denied POST writes nothing (per-table tuple counters of the transaction).
"""
from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client, RequestFactory, override_settings
from django.urls import reverse
from django.utils import timezone

from backoffice.security import SESSION_STARTED, STEPUP_AT
from tests import factories as f

pytestmark = pytest.mark.django_db

ANON, NONSTAFF, SU = "anonymous", "non-staff", "superuser"
V, DR, BM, CO, CA, OA = ("viewer", "dispute reviewer", "blacklist manager", "contract operator",
                         "contract approver", "ops admin")
ROLES = (V, DR, BM, CO, CA, OA)
PRINCIPALS = (ANON, NONSTAFF, *ROLES, SU)

ALL = frozenset({*ROLES, SU})  # every staff role (each has the common view permissions) and the superuser
NONE: frozenset = frozenset()


def only(*who: str) -> frozenset:
    return frozenset(who)


# ---------------------------------------------------------------- the expected matrix
# Registered models: (see list + change page + history, open the add page and add, save a change, delete).
# The changelist, change page and history take POST like GET; delete without "post=yes" only confirms.
MODELS = {
    # the chain mirror: everyone looks, the sync writes
    "chain_order": (ALL, NONE, NONE, NONE),
    "chain_userprofile": (ALL, NONE, NONE, NONE),
    "chain_arbitrator": (ALL, NONE, NONE, NONE),
    "chain_eventsynccursor": (ALL, NONE, NONE, NONE),
    "chain_chainevent": (ALL, NONE, NONE, NONE),
    "chain_rpcprovider": (ALL, NONE, NONE, NONE),
    "chain_token": (ALL, NONE, NONE, NONE),
    "chain_reconciliationdrift": (ALL, NONE, NONE, NONE),
    # trust and safety
    "disputes_blacklist": (ALL, only(BM, SU), NONE, NONE),
    "disputes_disputedorder": (ALL, NONE, ALL, NONE),  # its change page is a redirect to the review page
    "disputes_reviewflag": (ALL, NONE, NONE, NONE),
    # sanctions: everyone sees the lists, versions and hits; versions come from imports, hits from screening
    "disputes_sanctionslistversion": (ALL, NONE, NONE, NONE),
    "disputes_sanctionshit": (ALL, NONE, NONE, NONE),
    # operations
    "audit_auditlog": (only(OA, SU), NONE, NONE, NONE),
    "alerts_alert": (ALL, NONE, only(OA, SU), NONE),
    "ops_contractaction": (ALL, NONE, NONE, NONE),
    "alerts_alertchannel": (only(OA, SU), only(OA, SU), only(OA, SU), NONE),
    "alerts_alertdelivery": (only(OA, SU), NONE, NONE, NONE),
    "ops_opsreport": (only(OA, SU), NONE, NONE, NONE),
    "ops_platformflag": (ALL, NONE, only(OA, SU), NONE),
    "ops_secretschedule": (only(OA, SU), only(SU), only(OA, SU), NONE),
    "ops_secretrotation": (only(OA, SU), NONE, NONE, NONE),
    "ops_incident": (ALL, only(OA, SU), only(OA, SU), NONE),
    # backups: everyone sees that they run and restore; only the backup service writes them
    "ops_backuprun": (ALL, NONE, NONE, NONE),
    "ops_restoretest": (ALL, NONE, NONE, NONE),
    # signing keys: each person with a contract role sees their own; ops admins see everyone's
    "ops_staffsigningkey": (only(CO, CA, OA, SU), NONE, NONE, NONE),
    # the automatic pause: everyone sees each chain's triggers and the drills; switching and drilling are pages
    "ops_autopauseswitch": (ALL, NONE, NONE, NONE),
    "ops_drillrun": (ALL, NONE, NONE, NONE),
    # accounts, devices, sign-in records
    "auth_user": (only(OA, SU), only(SU), only(SU), only(SU)),
    "auth_group": (only(OA, SU), only(SU), only(SU), only(SU)),
    "otp_totp_totpdevice": (only(SU), only(SU), only(SU), only(SU)),
    "otp_static_staticdevice": (only(SU), only(SU), only(SU), only(SU)),
    "axes_accessattempt": (only(SU), NONE, only(SU), only(SU)),
    "axes_accesslog": (only(SU), NONE, only(SU), only(SU)),
    "axes_accessfailurelog": (only(SU), NONE, only(SU), only(SU)),
    # beat schedules: ops admin enables, disables and retimes tasks (audited); registering them is code
    # (register_schedules), and nothing is deleted (a schedule's delete would take its tasks with it)
    "django_celery_beat_periodictask": (only(OA, SU), NONE, only(OA, SU), NONE),
    "django_celery_beat_clockedschedule": (only(SU), only(SU), only(SU), NONE),
    "django_celery_beat_crontabschedule": (only(SU), only(SU), only(SU), NONE),
    "django_celery_beat_solarschedule": (only(SU), only(SU), only(SU), NONE),
    "django_celery_beat_intervalschedule": (only(SU), only(SU), only(SU), NONE),
}

# Other pages: URL name → (allowed for GET, allowed for POST).
PAGES = {
    "index": (ALL, ALL),
    "password_change": (ALL, ALL),
    "password_change_done": (ALL, NONE),  # a GET-only page
    "jsi18n": (ALL, NONE),
    "otp": (ALL, ALL),
    "stepup": (ALL, ALL),
    "dashboard_chart_csv": (ALL, ALL),
    "app_list:chain": (ALL, ALL),
    "app_list:disputes": (ALL, ALL),
    "app_list:ops": (ALL, ALL),
    "app_list:audit": (only(OA, SU), only(OA, SU)),
    "app_list:alerts": (ALL, ALL),
    "app_list:auth": (only(OA, SU), only(OA, SU)),
    "app_list:otp_totp": (only(SU), only(SU)),
    "app_list:otp_static": (only(SU), only(SU)),
    "app_list:axes": (only(SU), only(SU)),
    "app_list:django_celery_beat": (only(OA, SU), only(OA, SU)),
    # trust and safety pages
    "disputes_disputedorder_review": (ALL, only(DR, SU)),  # POST op=claim
    "disputes_disputedorder_rb04": (ALL, only(BM, SU)),
    "disputes_disputedorder_arbitrators": (ALL, ALL),
    "disputes_blacklist_import": (only(BM, SU), only(BM, SU)),
    "disputes_sanctionslistversion_import": (only(BM, SU), only(BM, SU)),  # an import blacklists what it hits
    # contract actions: operators propose and execute, approvers approve or reject (four eyes)
    "ops_contractaction_propose": (only(CO, SU), only(CO, SU)),
    "ops_contractaction_approve": (only(CA, SU), only(CA, SU)),
    "ops_contractaction_reject": (only(CA, SU), only(CA, SU)),
    "ops_contractaction_execute": (only(CO, SU), only(CO, SU)),
    "ops_contractaction_replace": (only(CO, SU), only(CO, SU)),
    "ops_contractaction_cancel": (only(CO, SU), only(CO, SU)),  # proposes the Safe's no-op on a rejected SafeTx
    "ops_contractaction_status": (ALL, ALL),
    "ops_opsreport_database": (only(OA, SU), only(OA, SU)),  # RB-02: the queries may show data; ending is ops
    "ops_contractaction_emergency_stop": (only(CO, SU), only(CO, SU)),
    "ops_contractaction_resume": (only(CO, CA, SU), only(CO, CA, SU)),  # operators request, approvers approve
    # Safe custody: approvers (and the proposer) sign; the typed data is readable by everyone who sees actions
    "ops_contractaction_sign": (only(CO, CA, SU), only(CO, CA, SU)),  # CO proposed the fixture's action
    "ops_contractaction_sign_group": (only(CO, CA, SU), only(CO, CA, SU)),
    "ops_contractaction_typed_data": (ALL, ALL),
    "ops_staffsigningkey_register": (only(CO, CA, SU), only(CO, CA, SU)),
    "ops_staffsigningkey_revoke": (only(CA, OA, SU), only(CA, OA, SU)),  # the key's owner (CA) or an ops admin
    # the operations console: ops admins run it; every role reads incidents
    "ops_secretschedule_rotate": (only(OA, SU), only(OA, SU)),
    "ops_incident_open": (only(OA, SU), only(OA, SU)),
    "ops_incident_update": (NONE, only(OA, SU)),  # POST only
    "ops_incident_report": (ALL, ALL),
    # a dump holds every record: only ops admins download one or start a restore test (POST only)
    "ops_backuprun_download": (only(OA, SU), only(OA, SU)),
    "ops_backuprun_restore_test": (only(OA, SU), only(OA, SU)),
    # RB-05 by itself: ops admins switch a trigger (audited) and run a pause drill on a fork
    "ops_autopauseswitch_switch": (only(OA, SU), only(OA, SU)),
    "ops_drillrun_run": (only(OA, SU), only(OA, SU)),
    "auth_user_password_change": (only(SU), only(SU)),
    # OTP_ADMIN_HIDE_SENSITIVE_DATA: nobody, superusers included, reads another person's TOTP secret
    "otp_totp_totpdevice_config": (NONE, NONE),
    "otp_totp_totpdevice_qrcode": (NONE, NONE),
}

# Changelist actions: (model, action) → who may run it on a selected row ("delete selected" follows the
# delete column above).
ACTIONS = {
    ("chain_order", "export_csv"): ALL,
    ("chain_userprofile", "export_csv"): ALL,
    ("chain_chainevent", "export_csv"): ALL,
    ("chain_eventsynccursor", "resync_from_block"): only(CO, SU),
    ("disputes_blacklist", "lift_selected"): only(BM, SU),
    ("disputes_blacklist", "export_csv"): ALL,
    ("disputes_reviewflag", "resolve_selected"): only(DR, SU),
    ("disputes_sanctionshit", "handle_selected"): only(DR, SU),  # resolves the hit's review flag
    ("audit_auditlog", "export_csv"): only(OA, SU),
    ("alerts_alert", "acknowledge_true"): only(OA, SU),
    ("alerts_alert", "acknowledge_false"): only(OA, SU),
    ("alerts_alert", "acknowledge_test"): only(OA, SU),
    ("ops_contractaction", "export_csv"): ALL,
    ("axes_accessattempt", "cleanup_expired_attempts"): only(SU),
    ("django_celery_beat_periodictask", "enable_tasks"): only(OA, SU),  # one audited change per task
    ("django_celery_beat_periodictask", "disable_tasks"): only(OA, SU),
}

# Admin URLs outside the matrix, and why.
NOT_IN_MATRIX = {
    "login": "the entrance itself (tests/test_staff_access.py)",
    "logout": "the exit (tests/test_staff_access.py)",
    "autocomplete": "answers only with a model and field in the query; no admin here uses autocomplete_fields",
    "view_on_site": "no registered model has get_absolute_url",
    "ops_contractaction_dev_wallet": "development only, 404 without a local chain (tests/ops/test_dev_wallet.py)",
}


def _cells():
    cells = {}
    for model, (view, add, change, delete) in MODELS.items():
        cells[(f"{model}_changelist", "GET")] = view
        cells[(f"{model}_changelist", "POST")] = view
        cells[(f"{model}_add", "GET")] = add
        cells[(f"{model}_add", "POST")] = add
        cells[(f"{model}_change", "GET")] = view
        cells[(f"{model}_change", "POST")] = change
        cells[(f"{model}_delete", "GET")] = delete
        cells[(f"{model}_delete", "POST")] = delete
        cells[(f"{model}_history", "GET")] = view
        cells[(f"{model}_history", "POST")] = view
        if model not in ("disputes_disputedorder", "disputes_sanctionslistversion"):  # these have no actions
            cells[(f"action:{model}:delete_selected", "POST")] = delete  # only confirms: no "post=yes"
    for name, (get, post) in PAGES.items():
        cells[(name, "GET")] = get
        cells[(name, "POST")] = post
    for (model, action), who in ACTIONS.items():
        cells[(f"action:{model}:{action}", "POST")] = who
    return cells


EXPECTED = _cells()
# Known failures outside this project's code, kept visible (strict: the cell passes once they are fixed).
KNOWN: dict = {}
PARAMS = [pytest.param(name, method, who, id=f"{name}-{method}-{who}",
                       marks=[KNOWN[(name, method, who)]] if (name, method, who) in KNOWN else [])
          for (name, method) in EXPECTED for who in PRINCIPALS]


# ---------------------------------------------------------------- the rows and the people

@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """One of every registered model's rows and one signed-in session per principal, built once for the module
    inside a transaction rolled back at its end (each test runs in a savepoint of it)."""
    no_chain = tmp_path_factory.mktemp("no-chain") / "deployment.json"
    overrides = override_settings(CHAIN_DEPLOYMENT_FILE=no_chain, OWNER_KEY="", OWNER_KEYSTORE="",
                                  STEPUP_SECONDS=24 * 3600, CELERY_TASK_ALWAYS_EAGER=False)
    with django_db_blocker.unblock(), overrides:
        from chain import rpc
        from chain import transactions as chain_tx

        rpc.reset_clients()
        chain_tx.reset_signer()
        atomic = transaction.atomic()
        atomic.__enter__()
        try:
            data = _build_world()
            yield data
        finally:
            transaction.set_rollback(True)
            atomic.__exit__(None, None, None)
            rpc.reset_clients()
            chain_tx.reset_signer()


def _build_world() -> dict:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django_celery_beat.models import (
        ClockedSchedule,
        CrontabSchedule,
        IntervalSchedule,
        PeriodicTask,
        SolarSchedule,
    )
    from django_otp import DEVICE_ID_SESSION_KEY
    from django_otp.plugins.otp_static.models import StaticDevice
    from django_otp.plugins.otp_totp.models import TOTPDevice

    from backoffice.alerts.models import Alert, AlertChannel, AlertDelivery
    from backoffice.audit.services import record_audit
    from chain.models import ChainEvent, EventSyncCursor, ReconciliationDrift, RpcProvider, Token
    from disputes.models import Blacklist, ReviewFlag, SanctionsHit, SanctionsListVersion
    from ops.models import (
        AutoPauseSwitch,
        BackupRun,
        ContractAction,
        DrillRun,
        Incident,
        OpsReport,
        PlatformFlag,
        RestoreTest,
        SecretRotation,
        SecretSchedule,
        StaffSigningKey,
    )
    from tests.disputes.builders import disputed_order

    User = get_user_model()
    users = {}
    for who in PRINCIPALS[1:]:
        user = User.objects.create_user(who.replace(" ", "-"), is_staff=who != NONSTAFF, is_superuser=who == SU)
        if who in ROLES:
            user.groups.set([Group.objects.get(name=who)])
        users[who] = user

    sessions = {}
    for who, user in users.items():
        client = Client()
        client.force_login(user)
        session = client.session
        session[SESSION_STARTED] = time.time()
        if user.is_staff:  # a completed password + one-time-code login (as tests/conftest.py does)
            device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
            session[DEVICE_ID_SESSION_KEY] = device.persistent_id
            session[STEPUP_AT] = time.time()
        session.save()
        sessions[who] = client.cookies["sessionid"].value

    now = timezone.now()
    order = f.order()
    disputed = disputed_order()
    profile = order.buyer
    arbitrator = f.arbitrator()
    cursor = EventSyncCursor.objects.create(chain="bsc", last_block=100, updated_at=now)
    event = ChainEvent.objects.create(chain="bsc", block_number=10, block_hash=f.tx_hash(), block_time=now,
                                      tx_hash=f.tx_hash(), log_index=0, address=f.wallet())
    provider = RpcProvider.objects.create(chain="bsc", role="primary", url="http://127.0.0.1:1")
    token = Token.objects.create(chain="bsc", address=f.wallet(), symbol="USDT", decimals=18)
    drift = ReconciliationDrift.objects.create(chain="bsc", onchain_id=order.onchain_id, field="status",
                                               at_block=10, detected_at=now)
    blacklist = Blacklist.objects.create(wallet=f.wallet(), reason="fraud", source="manual", created_at=now)
    flag = ReviewFlag.objects.create(wallet=f.wallet(), role="seller", reason="disputes", created_at=now)
    sanctions_version = SanctionsListVersion.objects.create(list_key="ofac-ETH", source="matrix", format="address_list",
                                                            sha256="0" * 64, entry_count=1, imported_by_label="matrix")
    sanctions_hit = SanctionsHit.objects.create(wallet=f.wallet(), source="list", version=sanctions_version,
                                                flag=ReviewFlag.objects.create(wallet=f.wallet(), role="sanctions",
                                                                               reason="hit", created_at=now))
    audit = record_audit(actor=users[SU], action="matrix_fixture", object_type="test")
    alert = Alert.objects.create(key="matrix", severity="P2", title="matrix", source="test")
    channel = AlertChannel.objects.create(name="matrix", kind="webhook", url="https://hooks.example.com/x")
    delivery = AlertDelivery.objects.create(alert=alert, channel=channel)
    report = OpsReport.objects.create(status="ok", data={}, text="report")
    platform_flag = PlatformFlag.objects.get_or_create(key="TRADES_ENABLED", defaults={"value": True})[0]
    secret = SecretSchedule.objects.first() or SecretSchedule.objects.create(name="OWNER_KEY")
    rotation = SecretRotation.objects.create(secret=secret, rotated_by=users[SU], reason="scheduled")
    incident = Incident.objects.create(title="matrix", severity="P2", started_at=now, detected_at=now,
                                       created_by=users[SU])
    action = ContractAction.objects.create(
        chain="bsc", kind="pause", description="pause()", to_address=f.wallet(), calldata="0x8456cb59",
        calldata_hash="0x" + "2" * 64, reason="matrix", proposed_by=users[CO])
    signing_key = StaffSigningKey.objects.create(user=users[CA], address=f.wallet(), challenge="matrix",
                                                 signature="0x" + "1" * 130)
    backup = BackupRun.objects.create(started_at=now, finished_at=now, status="ok", trigger="command",
                                      actor_label="system:matrix", file_path="/nonexistent/matrix.dump",
                                      size_bytes=1, sha256="0" * 64)
    restore_test = RestoreTest.objects.create(backup=backup, actor_label="system:matrix", created_at=now,
                                              finished_at=now, status="passed")
    switch = AutoPauseSwitch.objects.create(chain="bsc", trigger="escrow-insolvent", enabled=False, reason="matrix",
                                            updated_by=users[SU])
    drill = DrillRun.objects.create(chain="bsc", actor_label="system:matrix", started_at=now, status="failed",
                                    error="matrix")
    interval = IntervalSchedule.objects.create(every=10, period="seconds")
    crontab = CrontabSchedule.objects.create(minute="0", hour="3")
    solar = SolarSchedule.objects.create(event="sunrise", latitude=Decimal("1"), longitude=Decimal("1"))
    clocked = ClockedSchedule.objects.create(clocked_time=now + timedelta(days=1))
    task = PeriodicTask.objects.create(name="matrix", task="matrix.no_such_task", interval=interval)
    attempt = AccessAttempt.objects.create(username="x", ip_address="192.0.2.1", user_agent="t",
                                           failures_since_start=1, get_data="", post_data="", http_accept="",
                                           path_info="/admin/login/")
    access_log = AccessLog.objects.create(username="x", ip_address="192.0.2.1", user_agent="t",
                                          http_accept="", path_info="/admin/login/")
    failure_log = AccessFailureLog.objects.create(username="x", ip_address="192.0.2.1", user_agent="t",
                                                  http_accept="", path_info="/admin/login/", locked_out=False)
    totp = TOTPDevice.objects.get(user=users[SU])
    static = StaticDevice.objects.create(user=users[SU], name="backup codes")
    objects = {
        "chain_order": order, "chain_userprofile": profile, "chain_arbitrator": arbitrator,
        "chain_eventsynccursor": cursor, "chain_chainevent": event, "chain_rpcprovider": provider,
        "chain_token": token, "chain_reconciliationdrift": drift, "disputes_blacklist": blacklist,
        "disputes_disputedorder": disputed, "disputes_reviewflag": flag, "audit_auditlog": audit, "alerts_alert": alert,
        "disputes_sanctionslistversion": sanctions_version, "disputes_sanctionshit": sanctions_hit,
        "ops_contractaction": action, "alerts_alertchannel": channel, "alerts_alertdelivery": delivery,
        "ops_opsreport": report, "ops_platformflag": platform_flag, "ops_secretschedule": secret,
        "ops_secretrotation": rotation, "ops_incident": incident, "auth_user": users[V],
        "auth_group": Group.objects.get(name=V), "otp_totp_totpdevice": totp, "otp_static_staticdevice": static,
        "axes_accessattempt": attempt, "axes_accesslog": access_log, "axes_accessfailurelog": failure_log,
        "django_celery_beat_periodictask": task, "django_celery_beat_clockedschedule": clocked,
        "django_celery_beat_crontabschedule": crontab, "django_celery_beat_solarschedule": solar,
        "django_celery_beat_intervalschedule": interval, "ops_staffsigningkey": signing_key,
        "ops_backuprun": backup, "ops_restoretest": restore_test, "ops_autopauseswitch": switch,
        "ops_drillrun": drill,
    }
    return {"sessions": sessions, "objects": objects}


def _url(name: str, world: dict) -> str:
    objects = world["objects"]
    if name.startswith("app_list:"):
        return reverse("admin:app_list", kwargs={"app_label": name.split(":")[1]})
    if name.startswith("action:"):
        return reverse(f"admin:{name.split(':')[1]}_changelist")
    if name == "dashboard_chart_csv":
        return reverse("admin:dashboard_chart_csv", args=["volume"])
    if name == "ops_contractaction_sign_group":
        return reverse("admin:ops_contractaction_sign_group", args=["matrix"])
    if name == "ops_contractaction_status":
        return reverse("admin:ops_contractaction_status", args=["bsc"])
    if name.startswith("disputes_disputedorder_review"):
        return reverse("admin:" + name, args=[objects["disputes_disputedorder"].pk])
    if name == "auth_user_password_change":
        return reverse("admin:auth_user_password_change", args=[objects["auth_user"].pk])
    for suffix in ("_change", "_delete", "_history", "_approve", "_reject", "_execute", "_replace", "_cancel",
                   "_rotate", "_update", "_config", "_qrcode", "_sign", "_typed_data", "_revoke", "_download"):
        if name.endswith(suffix):
            model = name[: -len(suffix)]
            if model in objects:
                return reverse("admin:" + name, args=[objects[model].pk])
    return reverse("admin:" + name)


def _body(name: str, world: dict) -> dict:
    if name.startswith("action:"):
        _, model, action = name.split(":")
        return {"action": action, helpers.ACTION_CHECKBOX_NAME: [world["objects"][model].pk], "index": "0"}
    if name == "disputes_disputedorder_review":
        return {"op": "claim"}
    return {}


def _write_counters() -> dict:
    """Rows inserted, updated and deleted by this transaction, per table (sessions and access audit rows aside)."""
    from backoffice.audit.models import AuditLog

    with connection.cursor() as cur:
        cur.execute("SELECT relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_xact_user_tables "
                    "WHERE relname NOT IN ('django_session', %s)", [AuditLog._meta.db_table])
        counters = {name: n for name, n in cur.fetchall() if n}
    counters["audit rows (not auth)"] = AuditLog.objects.exclude(object_type="auth").count()
    return counters


def _messages(response) -> list[str]:
    return [str(m) for m in getattr(response.wsgi_request, "_messages", [])]


# ---------------------------------------------------------------- the cells

@pytest.mark.parametrize("name, method, who", PARAMS)
def test_authorization_cell(world, name, method, who):
    client = Client()
    if who != ANON:
        client.cookies["sessionid"] = world["sessions"][who]
    url = _url(name, world)
    before = _write_counters() if method == "POST" else None

    response = client.get(url) if method == "GET" else client.post(url, _body(name, world))
    if response.streaming:
        # A CSV export's server-side cursor is open from the view on: read it to its end (which closes it) inside
        # this test's savepoint, as a browser would, or closing it after the savepoint's rollback would abort the
        # module's transaction. (Not response.close(): its request_finished would close the module's connection.)
        b"".join(response.streaming_content)

    location = response.get("Location", "")
    to_login = response.status_code == 302 and location.startswith(reverse("admin:login"))
    # An action that is not offered leaves the plain changelist (or "No action selected."); one that ran answers
    # with its own page (confirmation, CSV) or a redirect back with its message.
    not_offered = name.startswith("action:") and (
        "No action selected." in _messages(response)
        or (response.status_code == 200 and response.templates
            and response.templates[0].name.endswith("change_list.html")))
    allowed_answer = (response.status_code == 200 or (response.status_code == 302 and not to_login)) \
        and not not_offered
    if who in EXPECTED[(name, method)]:
        assert allowed_answer, f"{who} should be allowed: {response.status_code} {location} {_messages(response)}"
        return
    if who in (ANON, NONSTAFF):
        assert to_login, f"{who} should be sent to the login page: {response.status_code} {location}"
    elif name.startswith("action:"):
        assert response.status_code == 403 or not_offered, f"{who} ran the action: {response.status_code}"
    else:
        denied = {403, 405} | ({404} if name.startswith("app_list:") else set())
        assert response.status_code in denied, f"{who} should be denied: {response.status_code} {location}"
    if method == "POST":
        assert _write_counters() == before, f"{who}'s refused POST wrote"


# ---------------------------------------------------------------- the table covers the registry

def _registry() -> set[tuple[str, str]]:
    """Every (URL name, method) and changelist action the admin site offers, from its registry."""
    site = admin.site
    cells = set()
    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_superuser=True, is_staff=True, is_active=True)
    model_url_names = set()
    for model, model_admin in site._registry.items():
        prefix = f"{model._meta.app_label}_{model._meta.model_name}"
        for pattern in model_admin.get_urls():
            if pattern.name and pattern.name not in NOT_IN_MATRIX:
                model_url_names.add(pattern.name)
                cells |= {(pattern.name, "GET"), (pattern.name, "POST")}
        if model_admin.actions is not None:
            for _, action_name, _ in model_admin._get_base_actions():
                cells.add((f"action:{prefix}:{action_name}", "POST"))
        cells |= {(f"app_list:{model._meta.app_label}", "GET"), (f"app_list:{model._meta.app_label}", "POST")}
    for pattern in site.get_urls():
        name = getattr(pattern, "name", None)
        if name and name not in model_url_names and name not in NOT_IN_MATRIX and name != "app_list":
            cells |= {(name, "GET"), (name, "POST")}
    return cells


def test_the_matrix_covers_every_admin_url_and_action():
    offered = _registry()
    assert offered - set(EXPECTED) == set(), "admin URLs or actions missing from EXPECTED"
    assert set(EXPECTED) - offered == set(), "EXPECTED lists URLs or actions the admin does not offer"


def test_the_matrix_has_a_cell_for_every_principal():
    assert len(PARAMS) == len(EXPECTED) * len(PRINCIPALS)
    assert {p.values[2] for p in PARAMS} == set(PRINCIPALS)


def test_the_write_counters_see_a_write(world):
    from backoffice.alerts.models import Alert

    before = _write_counters()
    Alert.objects.filter(pk=world["objects"]["alerts_alert"].pk).update(title="changed")
    assert _write_counters() != before
