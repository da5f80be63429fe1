"""Per-SKU surges (爆单 of one item): a hot SKU raises its own alert, once for the fleet,
while the total stays calm, and its new tickets carry the delay notice. The doors' watches
run on a fake clock against a real Redis: each round is one second."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.config.settings import Settings
from engine.http.guards import SURGE
from engine.http.placing import SURGE_NOTICE
from engine.http.surge_watch import SurgeWatch
from engine.metrics import Metrics
from engine.store import audit
from tests.conftest import Engine, eventually, make_settings
from tests.test_surge import FakeClock, feed, steady

RULES = {"factor": 10.0, "clear_factor": 2.0, "min_rate": 5.0, "baseline_s": 4.0,
         "hold_s": 1.0}


async def _second(doors: list[tuple[SurgeWatch, Metrics]], clock: FakeClock, redis: Redis,
                  settings: Settings, rates: dict[str, int]) -> None:
    """One second of orders at `rates` (per SKU, spread over the doors), then a round."""
    clock.now += 1.0
    for sku, rate in rates.items():
        for i in range(rate):
            doors[i % len(doors)][0].arrive(sku)
    for watch, metrics in doors:
        await watch.round(redis, settings, metrics, 0.0)


async def _surge_audit(redis: Redis) -> list[dict[str, Any]]:
    entries = await audit.events(redis, 4, 0, 1000)
    return [e for e in entries if str(e.get("action", "")).startswith("surge.")]


async def test_a_hot_sku_alerts_once_while_the_total_is_calm(redis: Redis) -> None:
    settings = make_settings(surge=RULES)
    clock = FakeClock()
    doors = [(SurgeWatch(settings.surge, clock), Metrics()) for _ in range(2)]
    calm = {"card-100": 2, "card-limited": 200}
    for _ in range(20):
        await _second(doors, clock, redis, settings, calm)
    assert not any(w.surging("card-100") for w, _ in doors)
    for _ in range(5):  # card-100 at 20x its own rate; the total rises 1.2x
        await _second(doors, clock, redis, settings, {**calm, "card-100": 40})
    for watch, metrics in doors:
        assert watch.surging("card-100") and not watch.surging("card-limited")
        assert not watch.detector.active  # the fleet as a whole is not surging
        assert metrics.sku_surge_active.labels("card-100")._value.get() == 1
    started = [e for e in await _surge_audit(redis) if e["action"] == "surge.start"]
    assert len(started) == 1, started  # two doors saw it; the fleet alerted once
    assert started[0]["details"]["sku"] == "card-100"
    for _ in range(10):
        await _second(doors, clock, redis, settings, calm)
    assert not any(w.surging("card-100") for w, _ in doors)
    actions = [e["action"] for e in await _surge_audit(redis)]
    assert actions.count("surge.start") == 1 and actions.count("surge.end") == 1


async def test_per_sku_watch_can_be_turned_off(redis: Redis) -> None:
    settings = make_settings(surge={**RULES, "per_sku": False})
    clock = FakeClock()
    doors = [(SurgeWatch(settings.surge, clock), Metrics())]
    for _ in range(20):
        await _second(doors, clock, redis, settings, {"card-100": 2, "card-limited": 200})
    for _ in range(5):
        await _second(doors, clock, redis, settings, {"card-100": 40, "card-limited": 200})
    assert not doors[0][0].surging("card-100")
    assert await _surge_audit(redis) == []


async def test_new_tickets_of_a_hot_sku_carry_the_delay_notice(engine: Engine) -> None:
    watch = engine.http.app[SURGE]
    status, calm = await engine.order(buyer="calm", wait_ms=200)  # no stock: a ticket
    assert status == 202 and calm.get("notice") is None
    await eventually(lambda: "card-100" in watch.sku_totals, timeout=3)
    detector, clock = steady()
    feed(detector, clock, [1000.0] * 30)  # this SKU's detector has seen a tenfold spike
    watch.sku_detectors["card-100"] = detector
    await eventually(lambda: watch.surging("card-100"), timeout=3)  # the next fleet round
    status, busy = await engine.order(buyer="busy", wait_ms=200)
    assert status == 202 and busy["notice"] == SURGE_NOTICE, busy
    status, other = await engine.order(sku="card-limited", buyer="other", wait_ms=200)
    assert status == 202 and other.get("notice") is None  # another SKU: no notice
