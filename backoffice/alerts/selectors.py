"""Reads about alerts: what is firing, and how far each rule can be trusted (its precision over 30 days)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import connection
from django.utils import timezone

from backoffice.durations import human_duration

PRECISION_DAYS = 30


@dataclass(frozen=True)
class RulePrecision:
    """One rule (the alert key's first part) over the window: how often it fired, cleared by itself, and what staff
    said it was when they acknowledged it."""
    rule: str
    fired: int
    resolved_by_itself: int
    marked_true: int
    marked_false: int
    marked_test: int
    median_to_acknowledge: timedelta | None

    @property
    def precision(self) -> float | None:
        """True alarms among those staff judged (a test is neither); None before the first verdict."""
        judged = self.marked_true + self.marked_false
        return self.marked_true / judged if judged else None

    @property
    def median_text(self) -> str:
        return human_duration(self.median_to_acknowledge.total_seconds()) if self.median_to_acknowledge else "—"

    @property
    def precision_text(self) -> str:
        return f"{self.precision:.0%}" if self.precision is not None else "—"


def precision_by_rule(*, days: int = PRECISION_DAYS) -> list[RulePrecision]:
    """Per rule, over the alerts raised in the last `days`: fired, resolved by itself (its check saw it clear
    before anyone acknowledged it), marked true / false / test, and the median time from raised to acknowledged.
    Noisiest first."""
    since = timezone.now() - timedelta(days=days)
    with connection.cursor() as cur:
        cur.execute("""
            SELECT split_part(key, ':', 1) AS rule, COUNT(*),
                   COUNT(*) FILTER (WHERE resolved_at IS NOT NULL
                                    AND (acknowledged_at IS NULL OR resolved_at < acknowledged_at)),
                   COUNT(*) FILTER (WHERE verdict = 'true'), COUNT(*) FILTER (WHERE verdict = 'false'),
                   COUNT(*) FILTER (WHERE verdict = 'test'),
                   percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM acknowledged_at - created_at))
                       FILTER (WHERE acknowledged_at IS NOT NULL)
            FROM ops_alerts WHERE created_at >= %s
            GROUP BY 1 ORDER BY 2 DESC, 1""", [since])
        rows = cur.fetchall()
    return [RulePrecision(rule, fired, by_itself, true, false, test,
                          timedelta(seconds=float(median)) if median is not None else None)
            for rule, fired, by_itself, true, false, test, median in rows]
