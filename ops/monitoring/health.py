"""The runbook's health check (§2): database, redis, celery and each chain's RPC, each under a deadline.

Every check runs in a worker thread; the endpoint waits at most DEADLINE for all of them, so it
answers within a second even when a dependency hangs (a hung check reports a timeout). The
result is shared for CACHE_SECONDS so that monitors and dashboards do not multiply the work.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable

from django.conf import settings
from django.db import connection

from backoffice.durations import human_duration

from .schedules import schedules, stored_max_gap_seconds

START_TIME = time.time()
DEADLINE = 0.8
CACHE_SECONDS = 1.0
QUEUE_WARNING = 500  # RB-09: > 500 tasks queued (in any one queue)
WORKER_HEARTBEAT_KEY = "backoffice:celery:workers"
WORKER_STALE_SECONDS = 30
TASKS_DONE_KEY = "backoffice:celery:tasks_done"
VERSION = "0.1.0"

_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="health")
_cache: dict[str, Any] = {"at": 0.0, "result": None, "refreshing": False}
_cache_lock = threading.Lock()
_redis_client = None


def redis_client():
    global _redis_client
    if _redis_client is None:
        import redis

        _redis_client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)
    return _redis_client


def _safe_error(exc: BaseException) -> str:
    """Exception class and a generic phrase: driver messages carry host names and addresses."""
    return f"{type(exc).__name__}: unavailable"


def check_database() -> dict:
    started = time.monotonic()
    try:
        with connection.cursor() as cur:
            # A database that hangs on an open connection must not hold this worker thread forever.
            cur.execute("SET statement_timeout = 800")
            cur.execute("SELECT 1")
            cur.fetchone()
    except Exception as exc:
        connection.close()
        return {"status": "error", "error": _safe_error(exc)}
    return {"status": "ok", "latency_ms": round((time.monotonic() - started) * 1000, 1)}


def check_redis() -> dict:
    started = time.monotonic()
    try:
        client = redis_client()
        client.ping()
        info = client.info("memory")
    except Exception as exc:
        return {"status": "error", "error": _safe_error(exc)}
    used, limit = info.get("used_memory", 0), info.get("maxmemory", 0)
    result = {"status": "ok", "latency_ms": round((time.monotonic() - started) * 1000, 1),
              "memory_used_mb": round(used / 2**20, 1)}
    if limit:
        result["memory_used_pct"] = round(100 * used / limit, 1)
        if used / limit > 0.7:  # RB-08
            result["status"] = "warning"
    return result


# The Redis transport keeps a queue as a list named after it, and messages sent with a priority in lists
# suffixed by the priority step (kombu.transport.redis): a queue's depth is the sum of all of them.
PRIORITY_SEP, PRIORITY_STEPS = "\x06\x16", (0, 3, 6, 9)


def queue_depths() -> dict[str, int]:
    """Tasks waiting in each queue a complete set of workers consumes (RB-09), in one round trip; and in any
    other sync.<chain> queue that holds tasks (unconsumed_queues tells those apart)."""
    from backoffice.queues import all_queues

    client = redis_client()
    configured = all_queues()
    queues = configured + sorted(_other_sync_queues(client) - set(configured))
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for step in PRIORITY_STEPS:
            pipe.llen(f"{queue}{PRIORITY_SEP}{step}" if step else queue)
    lengths = pipe.execute()
    n = len(PRIORITY_STEPS)
    depths = {queue: sum(lengths[i * n:(i + 1) * n]) for i, queue in enumerate(queues)}
    return {queue: depth for queue, depth in depths.items() if depth or queue in configured}


def _other_sync_queues(client) -> set[str]:
    """sync.<chain> queues present in Redis (Redis drops a list once it is empty): a chain taken out of CHAINS
    leaves its queue behind, and its beat entries keep filling it until register_schedules disables them. No
    worker consumes it, so without this its pile would grow where neither /health nor /metrics look."""
    from backoffice.chain_settings import NAME_RE

    found = set()
    for key in client.scan_iter(match="sync.*", count=1000):
        queue = (key.decode() if isinstance(key, bytes) else key).split(PRIORITY_SEP)[0]
        if NAME_RE.match(queue.removeprefix("sync.")):
            found.add(queue)
    return found


def unconsumed_queues(queues: dict[str, int]) -> dict[str, int]:
    """The queues among `queues` that no worker of the configured chains consumes, with their depth."""
    from backoffice.queues import all_queues

    configured = set(all_queues())
    return {queue: depth for queue, depth in queues.items() if queue not in configured}


def celery_counts() -> tuple[int, dict[str, int]]:
    """(workers with a fresh heartbeat, tasks waiting per queue)."""
    client = redis_client()
    now = time.time()
    beats = client.hgetall(WORKER_HEARTBEAT_KEY)
    workers = sum(1 for ts in beats.values() if now - float(ts) < WORKER_STALE_SECONDS)
    return workers, queue_depths()


def check_celery() -> dict:
    try:
        workers, queues = celery_counts()
    except Exception as exc:
        return {"status": "error", "error": _safe_error(exc)}
    # RB-09 per queue: one chain's backlog is a warning even while the other queues are empty.
    status = "ok" if workers and all(depth <= QUEUE_WARNING for depth in queues.values()) else "warning"
    result = {"status": status, "active_workers": workers, "queued_tasks": sum(queues.values()), "queues": queues}
    unconsumed = unconsumed_queues(queues)
    if unconsumed:
        # Tasks nobody will run: a warning at any depth, and what to do about it.
        result.update(status="warning", unconsumed_queues=unconsumed, unconsumed=(
            f"{', '.join(f'{q} holds {d:,} task(s)' for q, d in unconsumed.items())} for a chain not in CHAINS "
            f"({', '.join(settings.CHAINS)}): no worker consumes {'it' if len(unconsumed) == 1 else 'them'}. "
            "Run `manage.py register_schedules` to disable the chain's beat entries, then purge the tasks "
            f"(`celery -A backoffice purge -Q {','.join(unconsumed)}`), or add the chain back to CHAINS"))
    return result


def check_rpc(chain: str) -> dict:
    from chain.config import get_chain_config
    from chain.rpc import ProviderUnavailable, RpcError, get_client

    if not get_chain_config(chain).is_configured:
        return {"status": "ok", "configured": False}
    client = get_client(chain)
    started = time.monotonic()
    try:
        block, stamp = client.latest_block()
    except (ProviderUnavailable, RpcError) as exc:
        return {"status": "error", "error": _safe_error(exc), "using_fallback": False}
    skew = stamp - time.time()
    result = {"status": "ok", "latest_block": block, "latency_ms": round((time.monotonic() - started) * 1000, 1),
              "using_fallback": client.using_fallback, "clock_skew_seconds": round(skew, 1)}
    if client.using_fallback:
        primary = client.providers[0]
        result.update(status="warning", primary_error=primary.last_error.split(":")[0] if primary.last_error else "")
    clock = clock_problem(skew)
    if clock:
        result.update(status="warning", clock=clock)
    return result


def clock_problem(skew_seconds: float) -> str:
    """What staff should read when a chain's newest block and the server's clock disagree beyond the tolerance."""
    if abs(skew_seconds) <= settings.CHAIN_CLOCK_TOLERANCE_SECONDS:
        return ""
    if skew_seconds > 0:
        return (f"chain clock ahead of the server by {human_duration(skew_seconds)}: check the server's NTP "
                "and the node (ages and deadlines on these pages are off by as much)")
    return (f"newest block is {human_duration(-skew_seconds)} old: the node is behind or the chain stalled "
            "(check the node, or fail over to another provider)")


# Beat's scheduler writes an entry's last_run_at within seconds (backoffice.beat), and a task may wait its turn on a
# busy queue: an entry is late only past its period plus this, or half its period for the daily and weekly ones.
BEAT_SLACK_SECONDS = 600


@dataclass(frozen=True)
class ScheduleRun:
    name: str
    enabled: bool
    seconds_since_run: float | None  # None: never ran, nor was it changed (a fresh entry counts from then)
    max_gap_seconds: float

    @property
    def late(self) -> bool:
        slack = max(BEAT_SLACK_SECONDS, self.max_gap_seconds / 2)
        return (self.enabled and self.seconds_since_run is not None
                and self.seconds_since_run > self.max_gap_seconds + slack)


def schedule_runs() -> list[ScheduleRun]:
    """Every beat entry of the code's schedule with its last run: a dead beat, or one that lost the database,
    leaves them all late; an entry staff disabled is not late, but shown (a disabled check raises nothing)."""
    from django.utils import timezone
    from django_celery_beat.models import PeriodicTask

    defined = schedules()
    rows = {t.name: t for t in PeriodicTask.objects.filter(name__in=[s.name for s in defined])
            .select_related("interval", "crontab")}
    now, out = timezone.now(), []
    for schedule in defined:
        task = rows.get(schedule.name)
        since = task.last_run_at or task.date_changed if task else None
        # The period as staff may have retimed it in the admin, else the code's.
        gap = (stored_max_gap_seconds(task) if task else None) or schedule.max_gap_seconds
        out.append(ScheduleRun(schedule.name, bool(task and task.enabled),
                               (now - since).total_seconds() if since else None, gap))
    return out


def check_beat() -> dict:
    """Who watches the checks: beat itself. Late entries are a warning (nothing is checked or synced on time)."""
    try:
        runs = schedule_runs()
    except Exception as exc:
        return {"status": "error", "error": _safe_error(exc)}
    missing = [r.name for r in runs if r.seconds_since_run is None]
    late = [r.name for r in runs if r.late]
    disabled = [r.name for r in runs if not r.enabled and r.seconds_since_run is not None]
    result = {"status": "warning" if late or missing else "ok", "schedules": len(runs), "late": late,
              "disabled": disabled}
    if late:
        result["problem"] = (f"{len(late)} schedule(s) have not run on time ({', '.join(late[:5])}"
                             f"{'…' if len(late) > 5 else ''}): check that celery beat is running")
    if missing:
        result["missing"] = missing
        result["problem"] = (result.get("problem", "") + "; " if late else "") + (
            f"{', '.join(missing[:5])} not registered: run `manage.py register_schedules`")
    return result


def checks() -> dict[str, Callable[[], dict]]:
    table: dict[str, Callable[[], dict]] = {"database": check_database, "redis": check_redis, "celery": check_celery,
                                            "beat": check_beat}
    for chain, cfg in settings.CHAINS.items():
        table[f"rpc_{cfg['short']}"] = (lambda c=chain: check_rpc(c))
    return table


def run_checks(deadline: float = DEADLINE) -> dict:
    table = checks()
    futures = {name: _pool.submit(fn) for name, fn in table.items()}
    wait(futures.values(), timeout=deadline)
    results = {}
    for name, future in futures.items():
        if future.done() and future.exception() is None:
            results[name] = future.result()
        elif future.done():
            results[name] = {"status": "error", "error": _safe_error(future.exception())}
        else:
            results[name] = {"status": "error", "error": f"timeout after {int(deadline * 1000)} ms"}
    return results


def overall(results: dict[str, dict]) -> str:
    """error when the database is down (nothing works); degraded when anything else is unwell."""
    if results.get("database", {}).get("status") != "ok":
        return "error"
    if all(r.get("status") == "ok" for r in results.values()):
        return "ok"
    return "degraded"


def health() -> dict:
    """The checks' result, shared for CACHE_SECONDS. One caller refreshes it at a time: the others get the
    previous result meanwhile, so a burst of requests at expiry does not run the checks once per request."""
    now = time.monotonic()
    with _cache_lock:
        cached = _cache["result"]
        if cached is not None and (now - _cache["at"] < CACHE_SECONDS or _cache["refreshing"]):
            return cached
        _cache["refreshing"] = True
    try:
        results = run_checks()
        payload = {"status": overall(results), "version": VERSION, "uptime_seconds": int(time.time() - START_TIME),
                   "checks": results}
        with _cache_lock:
            _cache.update(at=time.monotonic(), result=payload)
    finally:
        with _cache_lock:
            _cache["refreshing"] = False
    return payload


def reset_cache() -> None:
    with _cache_lock:
        _cache.update(at=0.0, result=None, refreshing=False)
