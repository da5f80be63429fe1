"""Backpressure from downstream: admission follows the workers while they are behind, then
recovers by itself; the rate in force shows in /metrics and in the RateLimit headers."""

from __future__ import annotations

import asyncio
import itertools
import time

from engine.config import Backpressure
from engine.door.backpressure import Throttle
from tests.conftest import SHOP_A_KEY, EngineFactory, auth, codes, make_settings, post_many

POLICY = Backpressure(max_lag=100, max_delay_ms=500, min_rate=5)


def test_throttle_follows_the_drain_and_recovers() -> None:
    throttle = Throttle()
    assert throttle.step(POLICY, lag=10, delay_ms=0, drained_per_s=1000, configured=None) is None
    rate = throttle.step(POLICY, lag=500, delay_ms=0, drained_per_s=200, configured=None)
    assert rate == 180  # 0.9 of what the workers drained
    rate = throttle.step(POLICY, lag=500, delay_ms=0, drained_per_s=0, configured=None)
    assert rate == 5  # never below min_rate, never up while still behind
    rates = []
    for _ in range(40):  # the workers caught up: climb back, then let go
        rates.append(throttle.step(POLICY, lag=0, delay_ms=0, drained_per_s=400,
                                   configured=None))
    assert rates[0] == 6.25 and rates[-1] is None
    assert all(a < b for a, b in itertools.pairwise(rates) if a is not None and b is not None)


def test_delay_alone_throttles_and_configured_rate_caps() -> None:
    throttle = Throttle()
    rate = throttle.step(POLICY, lag=0, delay_ms=900, drained_per_s=10_000, configured=2000)
    assert rate == 2000
    assert throttle.step(POLICY, lag=0, delay_ms=0, drained_per_s=10_000,
                         configured=2000) is None


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


async def test_stalled_workers_slow_admission_which_recovers(engine_factory: EngineFactory
                                                             ) -> None:
    settings = make_settings(backpressure={"max_lag": 50, "max_delay_ms": 0, "min_rate": 5})
    engine = await engine_factory(settings)
    await engine.import_codes("card-100", codes("BP", 400))
    await engine.stop_worker()  # the workers stall
    base = str(engine.http.make_url("")).rstrip("/")
    first = await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": f"a{i}",
                                    "wait_ms": 0} for i in range(120)])
    assert {s for s, _ in first} == {202}

    async def metrics() -> str:
        resp = await engine.http.get("/metrics")
        return await resp.text()

    deadline = time.monotonic() + 5
    while _metric(await metrics(), "kamigate_backpressure") != 1:
        assert time.monotonic() < deadline, "admission never slowed"
        await asyncio.sleep(0.1)
    assert _metric(await metrics(), "kamigate_admission_rate") == 5
    later = await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": f"b{i}",
                                    "wait_ms": 0} for i in range(40)])
    tickets = [b for s, b in later if s == 202 and b["status"] == "queued"]
    assert len(tickets) >= 30 and all(b["queue"]["reason"] == "overflow" for b in tickets)
    resp = await engine.http.get(f"/v1/orders/{tickets[0]['order_id']}",
                                 headers=auth(SHOP_A_KEY))
    assert resp.headers["RateLimit-Policy"].startswith('"orders";q=')

    await engine.start_worker()  # the workers are back: the backlog drains, admission recovers
    deadline = time.monotonic() + 30
    while _metric(await metrics(), "kamigate_backpressure") != 0:
        assert time.monotonic() < deadline, "admission never recovered"
        await asyncio.sleep(0.2)
    status, body = await engine.order(buyer="after")
    assert status == 201 and body["status"] == "fulfilled"
