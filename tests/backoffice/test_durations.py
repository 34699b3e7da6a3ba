"""Ages and durations: never negative, two units at most."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from backoffice.durations import age, human_duration

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=timezone.utc)


def test_age_of_a_moment_in_the_future_is_zero_not_negative():
    assert age(NOW + timedelta(days=4), NOW) == timedelta(0)
    assert age(NOW - timedelta(hours=3), NOW) == timedelta(hours=3)


@pytest.mark.parametrize(("seconds", "text"), [(-5, "0 s"), (0, "0 s"), (45.9, "45 s"), (60, "1 min"), (719, "11 min"),
                                               (3_600, "1 h"), (3_900, "1 h 5 min"), (86_400, "1 d"),
                                               (372_000, "4 d 7 h")])
def test_human_duration_reads_as_staff_say_it(seconds, text):
    assert human_duration(seconds) == text
