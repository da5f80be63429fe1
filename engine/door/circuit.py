"""A circuit breaker for the front door's Redis calls: after a run of failures it stops
sending calls for a while, answering at once (503 with Retry-After) instead of piling
requests on a Redis that is down or drowning, then lets single probes through until enough
of them succeed. Pure: the caller asks `allow()` and reports each call's outcome."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class BreakerRules:
    failures: int = 5  # consecutive failures (errors, timeouts) that open it
    slow_ms: float = 0.0  # 0 = off; a success slower than this counts as a failure
    open_s: float = 2.0  # how long it stays open before letting a probe through
    probes: int = 1  # successful probes in a row needed to close it


class CircuitBreaker:
    """closed -> open after `failures` in a row; open -> half_open after `open_s`, one probe
    in flight at a time; half_open -> closed after `probes` successes, -> open on a failure.

    Outcomes reported while open, or while half_open with no probe in flight, come from
    calls let through before it opened: they say nothing about Redis now and are ignored.
    A probe that has not reported within `open_s` is presumed lost (its task cancelled) and
    another is let through, so a lost probe cannot keep the breaker shut for good.
    """

    def __init__(self, rules: BreakerRules | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules or BreakerRules()
        self._clock = clock
        self._state: State = "closed"
        self._failures = 0  # consecutive, while closed
        self._passed = 0  # successful probes, while half_open
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the probe in flight was let through
        self.opened_count = 0  # times it opened (a failed probe reopening it included)

    @property
    def state(self) -> State:
        return self._state

    def update_rules(self, rules: BreakerRules) -> None:
        """New thresholds from a config reload; the state and the counts stay."""
        self.rules = rules

    def allow(self) -> bool:
        """May a call go to Redis now? True while half_open makes the caller the probe."""
        if self._state == "closed":
            return True
        now = self._clock()
        if self._state == "open":
            if now - self._opened_at < self.rules.open_s:
                return False
            self._state, self._passed = "half_open", 0
        elif self._probe_at is not None and now - self._probe_at < self.rules.open_s:
            return False  # one probe at a time
        self._probe_at = now
        return True

    def success(self, latency_s: float = 0.0) -> None:
        if self.rules.slow_ms > 0 and latency_s * 1000 > self.rules.slow_ms:
            self.failure()
            return
        if self._state == "closed":
            self._failures = 0
        elif self._state == "half_open" and self._probe_at is not None:
            self._probe_at = None
            self._passed += 1
            if self._passed >= self.rules.probes:
                self._state, self._failures, self._passed = "closed", 0, 0

    def failure(self) -> None:
        if self._state == "closed":
            self._failures += 1
            if self._failures >= self.rules.failures:
                self._open()
        elif self._state == "half_open" and self._probe_at is not None:
            self._open()

    def retry_after_s(self) -> float:
        """Seconds until the next probe may go, rounded up and at least 1 (a Retry-After
        header's value); 0 when closed."""
        if self._state == "closed":
            return 0.0
        # half_open: a probe is out or about to be; its answer is a moment away.
        left = self._opened_at + self.rules.open_s - self._clock() \
            if self._state == "open" else 0.0
        # Rounded to the millisecond first, so 2.0000000001 s of float noise reads 2, not 3.
        return float(max(1, math.ceil(round(left, 3))))

    def _open(self) -> None:
        self._state, self._opened_at = "open", self._clock()
        self._failures, self._passed, self._probe_at = 0, 0, None
        self.opened_count += 1
