"""The circuit breaker that takes a failing RPC provider out of rotation until a trial call succeeds (RB-07)."""
from __future__ import annotations

import time
from dataclasses import dataclass

FAILURE_THRESHOLD = 3
RESET_SECONDS = 30.0


@dataclass
class CircuitBreaker:
    threshold: int = FAILURE_THRESHOLD
    reset_seconds: float = RESET_SECONDS
    state: str = "closed"
    consecutive_failures: int = 0
    opened_at: float | None = None
    _trial_in_flight: bool = False

    def allow(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        if self.state == "closed":
            return True
        if self.state == "open" and self.opened_at is not None and now - self.opened_at >= self.reset_seconds:
            self.state = "half_open"
            self._trial_in_flight = False
        if self.state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        self.state, self.consecutive_failures, self.opened_at, self._trial_in_flight = "closed", 0, None, False

    def release_trial(self) -> None:
        """The half-open trial call ended without a verdict (rate-limited, or a range too heavy): another may try."""
        self._trial_in_flight = False

    def record_failure(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.consecutive_failures += 1
        self._trial_in_flight = False
        if self.state == "half_open" or self.consecutive_failures >= self.threshold:
            self.state, self.opened_at = "open", now
