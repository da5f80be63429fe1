"""Surge (爆单) detection: the incoming order rate jumps far above its usual level, or past
what the workers can drain. Hysteresis keeps it from flapping: a surge starts only when the
start condition has held for `hold_s`, and ends only when the rate has stayed below a much
lower line (`clear_factor` × baseline) for `hold_s` too. Pure: fed counts, it answers events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SurgeRules:
    factor: float = 10.0  # start when incoming >= factor x baseline
    capacity_factor: float = 0.0  # 0 = off; also start when incoming >= this x drain capacity
    clear_factor: float = 2.0  # end only when incoming < clear_factor x baseline
    min_rate: float = 50.0  # orders/s; never a surge below this
    baseline_s: float = 300.0  # time constant of the baseline's moving average
    hold_s: float = 3.0  # how long the start (or the end) condition must hold


@dataclass(frozen=True)
class SurgeEvent:
    kind: Literal["start", "end"]
    rate: float  # orders/s when it fired
    baseline: float
    at: float  # clock seconds
    reason: str


class SurgeDetector:
    """Fed the orders counted since the previous call, about once a second.

    Warm-up: the baseline starts as the plain mean of what has been seen (the first
    observation is the baseline) and turns into the exponential average as history grows;
    during the first `hold_s` every observation feeds it and no surge can start, so a quiet
    first second does not leave a zero baseline that any later traffic would exceed. After
    that, observations that meet the start condition are held out of the baseline (as is
    everything while a surge is on), so a spike cannot raise the bar it is measured against.
    A detector started in the middle of a surge takes the surge for normal.
    """

    def __init__(self, rules: SurgeRules | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules or SurgeRules()
        self._clock = clock
        self._born = self._last = clock()
        self._pending = 0  # counted while the clock did not move
        self._rate = 0.0
        self._baseline = 0.0
        self._learned_s = 0.0  # seconds of history in the baseline
        self._active = False
        self._since: float | None = None  # when the pending start (or end) condition began

    @property
    def active(self) -> bool:
        return self._active

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def baseline(self) -> float:
        return self._baseline

    def update_rules(self, rules: SurgeRules) -> None:
        """New thresholds from a config reload; the baseline and the surge state stay."""
        self.rules = rules

    def observe(self, count: int, capacity: float | None = None) -> SurgeEvent | None:
        """`count` orders arrived since the last call; `capacity` is the measured drain rate
        (orders/s), if known. Answers an event when a surge starts or ends, else None."""
        now = self._clock()
        elapsed = now - self._last
        self._pending += count
        if elapsed <= 0:
            return None
        began, self._last = self._last, now
        self._rate = rate = self._pending / elapsed
        self._pending = 0
        r = self.rules
        warming = began - self._born < r.hold_s  # the interval began in the warm-up
        by_capacity = r.capacity_factor > 0 and capacity is not None and capacity > 0 \
            and rate >= r.capacity_factor * capacity and rate >= r.min_rate
        by_baseline = rate >= r.factor * self._baseline and rate >= r.min_rate
        if warming or not (self._active or by_baseline or by_capacity):
            self._learn(rate, elapsed)
        if warming:
            return None
        if self._active:
            met = not by_capacity and (rate < r.clear_factor * self._baseline
                                       or rate < r.min_rate)
        else:
            met = by_baseline or by_capacity
        if not met:
            self._since = None
            return None
        # The measurement covers the whole interval, so the condition held since it began.
        if self._since is None:
            self._since = began
        if now - self._since < r.hold_s:
            return None
        self._since = None
        self._active = not self._active
        return SurgeEvent("start" if self._active else "end", rate, self._baseline, now,
                          self._reason(rate, capacity, by_baseline, by_capacity))

    def _learn(self, rate: float, elapsed: float) -> None:
        self._learned_s += elapsed
        # The mean of everything so far until it weighs less than the moving average would.
        weight = max(1.0 - math.exp(-elapsed / self.rules.baseline_s),
                     elapsed / self._learned_s)
        self._baseline += weight * (rate - self._baseline)

    def _reason(self, rate: float, capacity: float | None, by_baseline: bool,
                by_capacity: bool) -> str:
        r = self.rules
        if not self._active:
            line = max(r.clear_factor * self._baseline, r.min_rate)
            return f"rate {rate:.1f}/s back under {line:.1f}/s"
        if by_capacity and not by_baseline:
            drain = capacity or 0.0
            return f"rate {rate:.1f}/s >= {r.capacity_factor:g}x drain capacity {drain:.1f}/s"
        return f"rate {rate:.1f}/s >= {r.factor:g}x baseline {self._baseline:.1f}/s"
