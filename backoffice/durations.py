"""Ages and durations as staff read them: never negative, in the largest units that matter.

Timestamps from a chain come from its nodes' clocks: a node ahead of ours (or a local chain whose time
was pushed forward) would make "time since" negative. An age is clamped at zero; the clock difference
itself is reported by the health check (`chain_clock`), not hidden in every age.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone


def age(since: datetime, now: datetime | None = None) -> timedelta:
    """Time elapsed since `since`; zero when it lies in the future."""
    return max((now or timezone.now()) - since, timedelta(0))


def human_duration(seconds: float) -> str:
    """'45 s', '12 min', '3 h 5 min', '4 d 7 h': two units at most, whole numbers, never negative."""
    total = max(int(seconds), 0)
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"
