"""Surge detection on a fake clock: one start and one end per surge, no flapping on noise."""

from __future__ import annotations

from typing import Any

from engine.door.surge import SurgeDetector, SurgeEvent, SurgeRules
from engine.http.guards import SURGE
from engine.http.placing import SURGE_NOTICE


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(detector: SurgeDetector, clock: FakeClock, rates: list[float],
         capacity: float | None = None) -> list[SurgeEvent]:
    """One observation a second at each rate; the events that came out."""
    events = []
    for rate in rates:
        clock.now += 1.0
        event = detector.observe(round(rate), capacity)
        if event is not None:
            events.append(event)
    return events


def steady(rules: SurgeRules | None = None, rate: float = 100.0,
           seconds: int = 600) -> tuple[SurgeDetector, FakeClock]:
    clock = FakeClock()
    detector = SurgeDetector(rules or SurgeRules(), clock)
    assert feed(detector, clock, [rate] * seconds) == []
    return detector, clock


def test_ten_times_spike_starts_and_ends_once() -> None:
    detector, clock = steady()
    assert detector.baseline == 100.0 and not detector.active
    spike_at = clock.now
    events = feed(detector, clock, [1000.0] * 30)
    assert [e.kind for e in events] == ["start"]
    start = events[0]
    assert start.at - spike_at <= SurgeRules().hold_s + 1
    assert start.rate == 1000.0 and start.baseline == 100.0 and "baseline" in start.reason
    assert detector.active and detector.rate == 1000.0
    assert detector.baseline == 100.0  # frozen during the surge
    drop_at = clock.now
    events = feed(detector, clock, [100.0] * 30)
    assert [e.kind for e in events] == ["end"]
    assert events[0].at - drop_at <= SurgeRules().hold_s + 1
    assert not detector.active


def test_five_times_spike_does_not_fire() -> None:
    detector, clock = steady()
    assert feed(detector, clock, [500.0] * 60 + [100.0] * 60) == []
    assert not detector.active


def test_short_spike_under_hold_does_not_fire_nor_move_the_baseline() -> None:
    detector, clock = steady()
    assert feed(detector, clock, [2000.0, 2000.0, 100.0]) == []
    assert detector.baseline == 100.0


def test_noise_around_the_threshold_does_not_flap() -> None:
    detector, clock = steady()
    events = feed(detector, clock, [900.0, 1100.0] * 120)
    starts = [e for e in events if e.kind == "start"]
    ends = [e for e in events if e.kind == "end"]
    assert len(starts) <= 1 and len(ends) <= 1


def test_noise_around_the_clear_line_does_not_flap() -> None:
    detector, clock = steady()
    assert [e.kind for e in feed(detector, clock, [1000.0] * 10)] == ["start"]
    # Between 1.5x and 2.5x the baseline: under the clear line half the time, never for hold_s.
    assert feed(detector, clock, [150.0, 250.0] * 60) == []
    assert detector.active
    assert [e.kind for e in feed(detector, clock, [150.0] * 10)] == ["end"]


def test_capacity_trigger() -> None:
    rules = SurgeRules(capacity_factor=1.0)
    detector, clock = steady(rules, rate=300.0)
    # 2x the usual rate is no surge by the baseline, but the workers drain only 400/s.
    assert feed(detector, clock, [600.0] * 10, capacity=1000.0) == []
    events = feed(detector, clock, [600.0] * 10, capacity=400.0)
    assert [e.kind for e in events] == ["start"]
    assert "capacity" in events[0].reason
    # Still over capacity: the surge holds even though the rate is under 2x baseline.
    assert feed(detector, clock, [500.0] * 10, capacity=400.0) == []
    assert [e.kind for e in feed(detector, clock, [300.0] * 10, capacity=400.0)] == ["end"]


def test_capacity_off_by_default() -> None:
    detector, clock = steady(rate=300.0)
    assert feed(detector, clock, [600.0] * 10, capacity=100.0) == []


def test_min_rate_honoured() -> None:
    detector, clock = steady(rate=2.0)
    assert feed(detector, clock, [40.0] * 30) == []  # 20x, but under min_rate
    assert [e.kind for e in feed(detector, clock, [60.0] * 10)] == ["start"]
    # Below min_rate the surge is over, whatever the (tiny) baseline says.
    assert [e.kind for e in feed(detector, clock, [10.0] * 10)] == ["end"]


def test_warm_up_never_fires_and_starts_from_the_first_observations() -> None:
    clock = FakeClock()
    detector = SurgeDetector(SurgeRules(), clock)
    # A quiet first second, then traffic: no alert during hold_s, and no zero baseline.
    assert feed(detector, clock, [0.0, 100.0, 100.0]) == []
    assert 60.0 <= detector.baseline <= 70.0
    assert feed(detector, clock, [100.0] * 30) == []
    assert 95.0 <= detector.baseline <= 100.0


def test_rate_uses_the_elapsed_time_and_a_still_clock_carries_the_count() -> None:
    clock = FakeClock()
    detector = SurgeDetector(SurgeRules(), clock)
    clock.now += 0.5
    assert detector.observe(50) is None
    assert detector.rate == 100.0
    assert detector.observe(30) is None  # no time passed: counted with the next call
    clock.now += 1.0
    detector.observe(70)
    assert detector.rate == 100.0


def test_update_rules_keeps_state() -> None:
    detector, clock = steady()
    feed(detector, clock, [1000.0] * 10)
    assert detector.active
    detector.update_rules(SurgeRules(factor=20.0, clear_factor=5.0))
    assert detector.active and detector.baseline == 100.0
    # The new clear line (5x) ends it where the old one (2x) would not have.
    assert [e.kind for e in feed(detector, clock, [400.0] * 10)] == ["end"]
    assert feed(detector, clock, [1500.0] * 10) == []  # 15x: under the new factor


async def test_new_tickets_during_a_surge_carry_a_delay_notice(engine: Any) -> None:
    status, calm = await engine.order(buyer="calm", wait_ms=200)  # no stock: a ticket
    assert status == 202 and calm.get("notice") is None
    detector, clock = steady()
    feed(detector, clock, [1000.0] * 30)  # a tenfold spike, held: the surge is on
    assert detector.active
    engine.http.app[SURGE].detector = detector
    status, busy = await engine.order(buyer="busy", wait_ms=200)
    assert status == 202 and busy["notice"] == SURGE_NOTICE, busy
