"""The Redis circuit breaker on a fake clock."""

from __future__ import annotations

from engine.door.circuit import BreakerRules, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def state(breaker: CircuitBreaker) -> str:
    """Read fresh each time (mypy would otherwise narrow the property across calls)."""
    return breaker.state


def opened(rules: BreakerRules | None = None) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker(rules or BreakerRules(), clock)
    for _ in range(breaker.rules.failures):
        assert breaker.allow()
        breaker.failure()
    assert state(breaker) == "open"
    return breaker, clock


def test_opens_after_n_consecutive_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerRules(failures=3), clock)
    breaker.failure()
    breaker.failure()
    assert state(breaker) == "closed" and breaker.opened_count == 0
    breaker.failure()
    assert state(breaker) == "open" and breaker.opened_count == 1


def test_a_success_resets_the_count() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerRules(failures=3), clock)
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert state(breaker) == "closed" and breaker.allow()


def test_open_refuses_then_lets_exactly_one_probe_through() -> None:
    breaker, clock = opened()
    assert not breaker.allow()
    clock.now += 1.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()
    assert state(breaker) == "half_open"
    assert not breaker.allow() and not breaker.allow()


def test_probe_success_closes() -> None:
    breaker, clock = opened()
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    assert state(breaker) == "closed"
    assert breaker.allow() and breaker.allow()
    assert breaker.opened_count == 1


def test_probe_failure_reopens_for_open_s() -> None:
    breaker, clock = opened()
    clock.now += 2.0
    assert breaker.allow()
    breaker.failure()
    assert state(breaker) == "open" and breaker.opened_count == 2
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow() and state(breaker) == "half_open"


def test_several_probes_needed() -> None:
    breaker, clock = opened(BreakerRules(probes=2))
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    assert state(breaker) == "half_open"
    assert breaker.allow()  # the next probe, once the first has answered
    assert not breaker.allow()
    breaker.success()
    assert state(breaker) == "closed"


def test_late_outcomes_from_before_it_opened_are_ignored() -> None:
    breaker, clock = opened()
    breaker.success()
    breaker.failure()
    assert state(breaker) == "open" and breaker.opened_count == 1
    clock.now += 2.0
    assert breaker.allow()
    breaker.success()
    breaker.failure()  # no probe in flight any more: a straggler
    assert state(breaker) == "closed"


def test_a_lost_probe_does_not_keep_it_shut() -> None:
    breaker, clock = opened()
    clock.now += 2.0
    assert breaker.allow()  # this probe never reports
    clock.now += 1.0
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()


def test_slow_calls_count_as_failures() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerRules(failures=2, slow_ms=100.0), clock)
    breaker.success(0.05)
    breaker.success(0.15)
    assert state(breaker) == "closed"
    breaker.success(0.2)
    assert state(breaker) == "open"


def test_slow_probe_reopens() -> None:
    breaker, clock = opened(BreakerRules(slow_ms=100.0))
    clock.now += 2.0
    assert breaker.allow()
    breaker.success(0.5)
    assert state(breaker) == "open"


def test_slow_off_by_default() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerRules(failures=1), clock)
    breaker.success(30.0)
    assert state(breaker) == "closed"


def test_retry_after() -> None:
    breaker, clock = opened(BreakerRules(open_s=2.5))
    assert breaker.retry_after_s() == 3.0
    clock.now += 1.0
    assert breaker.retry_after_s() == 2.0
    clock.now += 1.4
    assert breaker.retry_after_s() == 1.0
    clock.now += 0.1
    assert breaker.retry_after_s() == 1.0  # due now: still at least 1
    assert breaker.allow()
    assert breaker.retry_after_s() == 1.0  # half_open, probe in flight
    breaker.success()
    assert breaker.retry_after_s() == 0.0


def test_update_rules_keeps_state() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(BreakerRules(failures=5), clock)
    for _ in range(3):
        breaker.failure()
    breaker.update_rules(BreakerRules(failures=4, open_s=10.0))
    assert state(breaker) == "closed"
    breaker.failure()
    assert state(breaker) == "open"
    clock.now += 5.0
    assert not breaker.allow()
    assert breaker.retry_after_s() == 5.0
