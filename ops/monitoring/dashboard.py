"""The operations dashboard (admin index): status tiles and the runbook's business metrics (§9) as charts.

Every number comes from something cheap to read: the health check's 1-second cache, the sync cursors,
chain_state, the daily order rollup, one probe of the disputed-orders partial index, a 30-day index range
of user_profiles and the top-sellers snapshot kept by beat. Nothing here aggregates the orders table, so
the page costs the same at a million orders as at ten.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Min, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from backoffice import replica
from backoffice.admin_utils import csv_response
from backoffice.alerts.models import Alert
from backoffice.durations import human_duration
from chain.models import ChainState, DailyOrderStats, EventSyncCursor, Order, OrderStatus, TopSeller, UserProfile
from disputes.sanctions import selectors as sanctions
from disputes.selectors import dispute_age
from ops.backups.selectors import age_text, backup_health
from ops.models import Incident, IncidentStatus, SecretSchedule

from . import charts
from .checks.sync import SYNC_STUCK_AFTER, sync_lag_threshold
from .health import health

WINDOW_DAYS = 30
SANCTIONS_STALE_SECONDS = 48 * 3600  # the SanctionsListStale rule's threshold (ops/prometheus/alerts.yml)
CHART_PERMISSION = "chain.view_order"
DISPUTE_STATUSES = (OrderStatus.DISPUTED, OrderStatus.RESOLVED_BUYER, OrderStatus.RESOLVED_SELLER)


@dataclass
class Tile:
    key: str
    title: str
    value: Any
    status: str = "ok"  # ok / warning / error / unknown: the tile's colour
    detail: str = ""
    url: str | None = None


@dataclass
class Chart:
    key: str
    title: str
    header: list[str]
    rows: list[list[Any]]
    svg: str = ""
    note: str = ""
    csv_url: str = field(default="")


# ---------------------------------------------------------------------------------------------- tiles


def _url(name: str, *args, query: str = "") -> str:
    return reverse(f"admin:{name}", args=args) + (f"?{query}" if query else "")


# What a health tile says under its status, with units: (check key, text).
HEALTH_FACTS = (("latency_ms", "latency {} ms"), ("latest_block", "block {:,}"), ("active_workers", "{} worker(s)"),
                ("queued_tasks", "{:,} queued"), ("memory_used_pct", "memory {}% used"),
                ("schedules", "{} schedules"))


def _health_tiles() -> list[Tile]:
    links = {"celery": _url("django_celery_beat_periodictask_changelist"),
             "beat": _url("django_celery_beat_periodictask_changelist"), "database": _url("ops_opsreport_database")}
    for chain, cfg in settings.CHAINS.items():
        links[f"rpc_{cfg['short']}"] = _url("chain_rpcprovider_changelist", query=f"chain__exact={chain}")
    tiles = []
    for name, check in health()["checks"].items():
        facts = [text.format(check[key]) for key, text in HEALTH_FACTS if key in check]
        detail = check.get("error") or "; ".join(filter(None, [check.get("clock"), check.get("unconsumed"),
                                                                 check.get("problem"), ", ".join(facts)]))
        value, status = check.get("status", "unknown"), check.get("status", "unknown")
        if check.get("configured") is False:
            value, status = "not configured", "unknown"
            detail = "no RPC URL or contract addresses (README: configuration)"
        tiles.append(Tile(key=f"health-{name}", title=name, value=value, status=status, detail=detail,
                          url=links.get(name)))
    return tiles


def _sync_tiles(now: datetime) -> list[Tile]:
    cursors = {c.chain: c for c in EventSyncCursor.objects.all()}
    lag_threshold = sync_lag_threshold()  # the alert's own thresholds: tile and alert agree
    tiles = []
    for chain in settings.CHAINS:
        cursor = cursors.get(chain)
        url = _url("chain_eventsynccursor_changelist")
        if cursor is None:
            tiles.append(Tile(key=f"sync-{chain}", title=f"sync lag ({chain})", value="—", status="unknown",
                              detail="no cursor yet", url=url))
            continue
        lag = cursor.lag_blocks
        status = "unknown" if lag is None else ("warning" if lag > lag_threshold else "ok")
        if cursor.updated_at and now - cursor.updated_at > SYNC_STUCK_AFTER:
            status = "error"
        detail = f"block {cursor.last_block:,}, moved {cursor.updated_at:%Y-%m-%d %H:%M} UTC"
        if cursor.last_error:
            detail += f"; last error {cursor.last_error[:60]}"
        tiles.append(Tile(key=f"sync-{chain}", title=f"sync lag ({chain})",
                          value="—" if lag is None else f"{lag:,} blocks", status=status, detail=detail, url=url))
    return tiles


def _contract_tiles() -> list[Tile]:
    states = {s.chain: s for s in ChainState.objects.all()}
    tiles = []
    for chain in settings.CHAINS:
        state = states.get(chain)
        paused = state.paused if state else None
        solvent = state.solvency_ok if state else None
        value = {True: "PAUSED", False: "running", None: "unknown"}[paused]
        status = "error" if paused or solvent is False else ("unknown" if paused is None else "ok")
        detail = {True: "solvency ok", False: "SOLVENCY MISMATCH", None: "solvency unchecked"}[solvent]
        tiles.append(Tile(key=f"contract-{chain}", title=f"contracts ({chain})", value=value, status=status,
                          detail=detail, url=_url("ops_contractaction_status", chain)))
    return tiles


def _dispute_tile(now: datetime) -> Tile:
    pending = DailyOrderStats.objects.aggregate(n=Sum("disputed"))["n"] or 0
    # One probe of the partial index orders_disputed_queue_idx (WHERE status = 'disputed').
    oldest = Order.objects.filter(status=OrderStatus.DISPUTED).aggregate(oldest=Min("disputed_at"))["oldest"]
    status, detail = "ok", "none open"
    if oldest is not None:
        text, over_sla = dispute_age(oldest, now)
        detail = f"oldest {text}"
        if over_sla:
            status, detail = "warning", f"{detail} (over the {settings.DISPUTE_SLA_HOURS} h SLA)"
    return Tile(key="disputes", title="pending disputes", value=pending, status=status, detail=detail,
                url=_url("disputes_disputedorder_changelist"))


def _secret_tile() -> Tile:
    states = SecretSchedule.states()
    overdue, due = states.count("overdue"), states.count("due")
    status = "error" if overdue else ("warning" if due else "ok")
    return Tile(key="secrets", title="secret rotations due", value=overdue + due, status=status,
                detail=f"{overdue} overdue, {due} due soon", url=_url("ops_secretschedule_changelist"))


def _incident_tile() -> Tile:
    row = Incident.objects.exclude(status__in=(IncidentStatus.RESOLVED, IncidentStatus.POSTMORTEM)).aggregate(
        n=Count("id"), worst=Min("severity"))
    status = "ok" if not row["n"] else ("error" if row["worst"] in ("P0", "P1") else "warning")
    return Tile(key="incidents", title="open incidents", value=row["n"], status=status,
                detail=f"worst {row['worst']}" if row["n"] else "none open", url=_url("ops_incident_changelist"))


def _alert_tiles() -> list[Tile]:
    """What is firing now, by severity (an inhibited alert counts apart: its cause already pages), and, apart, what
    resolved by itself but nobody has looked at yet."""
    firing = dict(Alert.objects.firing().filter(inhibited="").values("severity").annotate(n=Count("id"))
                  .values_list("severity", "n"))
    inhibited = Alert.objects.firing().exclude(inhibited="").count()
    n = sum(firing.values())
    worst = min(firing) if firing else None
    status = "ok" if not n else ("error" if worst in ("P0", "P1") else "warning")
    detail = ", ".join(f"{severity} {count}" for severity, count in sorted(firing.items())) or "none firing"
    if inhibited:
        detail += f"; {inhibited} inhibited"
    resolved = Alert.objects.resolved().unacknowledged().count()
    return [Tile(key="alerts", title="firing alerts", value=n, status=status, detail=detail,
                 url=_url("alerts_alert_changelist", query="state=firing")),
            Tile(key="alerts-resolved", title="resolved, not acknowledged", value=resolved,
                 status="warning" if resolved else "ok",
                 detail="cleared by themselves: acknowledge with a verdict" if resolved else "none waiting",
                 url=_url("alerts_alert_changelist", query="state=resolved_unacknowledged"))]


def _backup_tile(now: datetime) -> Tile:
    """The last good backup and the last passed restore test, against the alert rules' 26 h and 8 days."""
    health = backup_health(now)
    status = "error" if health.backup_stale else ("warning" if health.restore_test_stale else "ok")
    return Tile(key="backups", title="last good backup", value=age_text(health.backup_age), status=status,
                detail=f"restore test passed {age_text(health.restore_test_age)}",
                url=_url("ops_backuprun_changelist"))


def _replica_tile() -> Tile | None:
    """The read replica's lag, and where the read-only pages read from because of it (only when one is configured)."""
    status = replica.replica_status()
    if not status.configured:
        return None
    if status.usable:
        value, state, detail = f"lag {status.lag_seconds:.1f} s", "ok", "read-only pages read the replica"
    else:
        value = f"lag {status.lag_seconds:.1f} s" if status.lag_seconds is not None else "not used"
        state = "warning" if status.reachable else "error"
        detail = f"pages read the primary: {status.reason}"
    if status.replay_paused:
        detail += "; replay paused"
    return Tile(key="db-replica", title="database replica", value=value, status=state, detail=detail)


def tiles(now: datetime | None = None) -> list[Tile]:
    now = now or timezone.now()
    return [*_health_tiles(), *filter(None, [_replica_tile()]), *_sync_tiles(now), *_contract_tiles(),
            _dispute_tile(now), _secret_tile(), _incident_tile(), *_alert_tiles(), _backup_tile(now),
            _sanctions_tile(now)]


def _sanctions_tile(now: datetime) -> Tile:
    """Sanctions screening: the hits nobody has handled (error), and how long ago the lists were last confirmed
    (warning past SanctionsListStale's 48 h while SANCTIONS_LIST_URL is set, or when no list was ever imported)."""
    state = sanctions.screening_state()
    age, _ = sanctions.list_age(now)
    refresh = sanctions.refresh_age_seconds(now)
    status = "error" if state.unhandled_hits else "ok"
    if status == "ok" and (age is None or (refresh is not None and refresh > SANCTIONS_STALE_SECONDS)):
        status = "warning"
    listed = "no list imported" if age is None else f"lists confirmed {human_duration(age)} ago"
    if refresh == float("inf"):
        listed += "; a SANCTIONS_LIST_URL never imported"
    waiting = f"; {state.pending:,}{'+' if state.pending_capped else ''} wallet(s) waiting" if state.pending else ""
    return Tile(key="sanctions", title="sanctions hits not handled", value=state.unhandled_hits, status=status,
                detail=listed + waiting, url=_url("disputes_sanctionslistversion_changelist"))


# ---------------------------------------------------------------------------------------------- chart data


def window(today: date | None = None) -> list[date]:
    """The last WINDOW_DAYS UTC days, today included, oldest first."""
    today = today or datetime.now(dt_timezone.utc).date()
    return [today - timedelta(days=WINDOW_DAYS - 1 - i) for i in range(WINDOW_DAYS)]


def _rollup_by_day_and_chain(days: list[date]) -> list[dict]:
    return list(DailyOrderStats.objects.filter(day__gte=days[0], day__lte=days[-1]).order_by()
                .values("day", "chain").annotate(
                    orders_=Sum("orders"), completed_=Sum("completed"), volume_=Sum("volume"),
                    completed_volume_=Sum("completed_volume"), fees_=Sum("completed_fees"),
                    disputes_=Sum(F("disputed") + F("resolved_buyer") + F("resolved_seller"))))


def _per_day(rollup: list[dict], days: list[date]) -> dict[date, dict[str, Any]]:
    out = {d: {"orders": 0, "completed": 0, "volume": Decimal(0), "fees": Decimal(0), "disputes": 0} for d in days}
    for row in rollup:
        day = out[row["day"]]
        day["orders"] += row["orders_"]
        day["completed"] += row["completed_"]
        day["volume"] += row["completed_volume_"]
        day["fees"] += row["fees_"]
        day["disputes"] += row["disputes_"]
    return out


def volume_rows(rollup: list[dict], days: list[date]) -> list[list[Any]]:
    """Runbook §9 'Daily order volume & revenue', oldest day first."""
    per_day = _per_day(rollup, days)
    return [[d, v["orders"], v["completed"], v["volume"], v["fees"]] for d, v in per_day.items()]


def dispute_rows(rollup: list[dict], days: list[date]) -> list[list[Any]]:
    """Runbook §9 'Dispute rate trend': disputed or resolved either way, over all orders created that day."""
    per_day = _per_day(rollup, days)
    return [[d, v["orders"], v["disputes"],
             round(Decimal(100 * v["disputes"]) / v["orders"], 1) if v["orders"] else None]
            for d, v in per_day.items()]


def chain_rows(rollup: list[dict]) -> list[list[Any]]:
    """Runbook §9 'Chain distribution': orders and volume (all statuses) per chain over the window."""
    totals: dict[str, list] = {}
    for row in rollup:
        total = totals.setdefault(row["chain"], [0, Decimal(0)])
        total[0] += row["orders_"]
        total[1] += row["volume_"]
    return [[chain, n, volume] for chain, (n, volume) in sorted(totals.items(), key=lambda kv: -kv[1][0])]


def user_rows(days: list[date]) -> list[list[Any]]:
    """Runbook §9 'User growth': new profiles per UTC day, and the running total within the window.

    An index range of user_profiles_created_idx: a month of sign-ups, not the table.
    """
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=dt_timezone.utc)
    counts = dict(UserProfile.objects.filter(created_at__gte=start).order_by()
                  .annotate(day=TruncDate("created_at", tzinfo=dt_timezone.utc))
                  .values("day").annotate(n=Count("id")).values_list("day", "n"))
    rows, running = [], 0
    for day in days:
        running += counts.get(day, 0)
        rows.append([day, counts.get(day, 0), running])
    return rows


def seller_rows() -> tuple[list[list[Any]], datetime | None]:
    """Runbook §9 'Top sellers by volume', from the snapshot the refresh-top-sellers beat keeps."""
    sellers = list(TopSeller.objects.all())
    rows = [[s.rank, s.seller_wallet, s.display_name, s.orders, s.total_volume, s.rating] for s in sellers]
    return rows, (sellers[0].computed_at if sellers else None)


HEADERS = {
    "volume": ["day", "orders", "completed", "volume_usdt", "fees_usdt"],
    "disputes": ["day", "total_orders", "disputes", "dispute_rate_pct"],
    "users": ["day", "new_users", "cumulative_users"],
    "chains": ["chain", "orders", "volume"],
    "sellers": ["rank", "seller_wallet", "display_name", "orders", "total_volume", "rating"],
}
TITLES = {
    "volume": "Daily order volume and fees, last 30 days (UTC)",
    "disputes": "Dispute rate by day of order creation, last 30 days (UTC)",
    "users": "New users per day, last 30 days (UTC)",
    "chains": "Orders per chain, last 30 days",
    "sellers": "Top 10 sellers by completed volume, last 30 days",
}


def chart_rows(key: str, today: date | None = None) -> tuple[list[list[Any]], str]:
    """The rows behind one chart (also its CSV), and a note (e.g. when a snapshot was taken)."""
    days = window(today)
    if key == "volume":
        return volume_rows(_rollup_by_day_and_chain(days), days), ""
    if key == "disputes":
        return dispute_rows(_rollup_by_day_and_chain(days), days), ""
    if key == "chains":
        return chain_rows(_rollup_by_day_and_chain(days)), ""
    if key == "users":
        return user_rows(days), ""
    if key == "sellers":
        rows, computed_at = seller_rows()
        return rows, _snapshot_note(computed_at)
    raise Http404(f"No chart named {key!r}.")


def _snapshot_note(computed_at: datetime | None) -> str:
    if computed_at is None:
        return "Not computed yet: the refresh-top-sellers beat runs every 10 minutes."
    return f"As of {computed_at.astimezone(dt_timezone.utc):%Y-%m-%d %H:%M} UTC (refreshed every 10 minutes)."


def build_charts(today: date | None = None) -> list[Chart]:
    days = window(today)
    rollup = _rollup_by_day_and_chain(days)  # one small query feeds three charts
    labels = [d.strftime("%m-%d") for d in days]
    volume = volume_rows(rollup, days)
    disputes = dispute_rows(rollup, days)
    chains = chain_rows(rollup)
    users = user_rows(days)
    sellers, computed_at = seller_rows()
    out = [
        Chart("volume", TITLES["volume"], HEADERS["volume"], volume, svg=charts.column_chart(
            key="volume", title=TITLES["volume"], x_label="day (UTC)", y_label="completed volume (token units)",
            labels=labels, values=[r[3] for r in volume], line=[r[4] for r in volume], line_label="fees")),
        Chart("disputes", TITLES["disputes"], HEADERS["disputes"], disputes, svg=charts.line_chart(
            key="disputes", title=TITLES["disputes"], x_label="day of order creation (UTC)",
            y_label="dispute rate (%)", labels=labels, values=[r[3] or 0 for r in disputes])),
        Chart("users", TITLES["users"], HEADERS["users"], users, svg=charts.column_chart(
            key="users", title=TITLES["users"], x_label="day (UTC)", y_label="new users", labels=labels,
            values=[r[1] for r in users], line=[r[2] for r in users], line_label="cumulative in window")),
        Chart("chains", TITLES["chains"], HEADERS["chains"], chains, svg=charts.bar_list(
            key="chains", title=TITLES["chains"], x_label="orders", y_label="chain",
            labels=[r[0] for r in chains], values=[r[1] for r in chains])),
        Chart("sellers", TITLES["sellers"], HEADERS["sellers"], sellers, note=_snapshot_note(computed_at),
              svg=charts.bar_list(key="sellers", title=TITLES["sellers"], x_label="completed volume (token units)",
                                  y_label="seller", labels=[r[2] or f"{r[1][:8]}…{r[1][-4:]}" for r in sellers],
                                  values=[r[4] for r in sellers])),
    ]
    for chart in out:
        chart.csv_url = reverse("admin:dashboard_chart_csv", args=[chart.key])
    return out


# ---------------------------------------------------------------------------------------------- views


def dashboard_context(request) -> dict:
    """Merged into the admin index's context: tiles for every staff member, charts for those who may see orders."""
    now = timezone.now()
    can_see_metrics = request.user.has_perm(CHART_PERMISSION)
    return {"dashboard": {"tiles": tiles(now), "charts": build_charts() if can_see_metrics else [],
                          "generated_at": now}}


def chart_csv(request, chart: str):
    """/admin/dashboard/<chart>.csv: the numbers behind one chart."""
    if chart not in HEADERS:
        raise Http404(f"No chart named {chart!r}.")
    if not request.user.has_perm(CHART_PERMISSION):
        raise PermissionDenied
    rows, _ = chart_rows(chart)
    return csv_response(f"{chart}.csv", HEADERS[chart], rows)

