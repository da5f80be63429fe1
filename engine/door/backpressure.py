"""Backpressure from downstream: when the workers fall behind (the order streams grow, or
orders wait too long between admission and claim), the fleet's admission rate follows what
the workers actually drain; when they catch up it climbs back by itself. Pure: fed
measurements, it answers the rate to admit at (None: no throttle beyond the configured
limits)."""

from __future__ import annotations

from engine.config.settings import Backpressure

BACK_OFF = 0.9  # admit a little less than the workers drained, so the backlog shrinks
RECOVER = 1.25  # per step while healthy; from min_rate to 10k/s in about 20 steps (10 s)


class Throttle:
    def __init__(self) -> None:
        self.rate: float | None = None  # None: not throttled

    def step(self, policy: Backpressure, lag: int, delay_ms: float, drained_per_s: float,
             configured: float | None) -> float | None:
        behind = (policy.max_lag > 0 and lag > policy.max_lag) or \
            (policy.max_delay_ms > 0 and delay_ms > policy.max_delay_ms)
        if behind:
            follow = max(policy.min_rate, drained_per_s * BACK_OFF)
            self.rate = follow if self.rate is None else min(self.rate, follow)
            if configured is not None:
                self.rate = min(self.rate, configured)
        elif self.rate is not None:
            self.rate *= RECOVER
            ceiling = configured if configured is not None else max(drained_per_s * 2, 1.0)
            if self.rate >= ceiling and lag <= policy.max_lag // 2:
                self.rate = None
        return self.rate
