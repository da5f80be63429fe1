"""The circuit breaker: with Redis stopped (SIGSTOP) the door answers 503 with Retry-After at
once instead of piling requests up, probes, and recovers by itself once Redis resumes."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

from engine import config
from engine.http.guards import BREAKER
from engine.store.embedded import RedisProcess, free_port
from tests.conftest import (
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
)


async def _order(engine: Engine, buyer: str) -> tuple[int, dict[str, Any], dict[str, str], float]:
    started = time.monotonic()
    resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
        "sku": "card-100", "qty": 1, "buyer": buyer, "wait_ms": 0})
    return resp.status, await resp.json(), dict(resp.headers), time.monotonic() - started


async def test_redis_stopped_opens_the_breaker_and_resuming_closes_it(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", port=free_port())
    server.start()
    raw = settings_dict(redis={"url": server.url, "shards": 1},
                        breaker={"failures": 3, "open_s": 1.0, "timeout_s": 0.5})
    engine = Engine(config.from_mapping(raw, environ={}), server.url)
    await engine.start()
    try:
        await engine.import_codes("card-100", codes("BRK", 200))
        status, _, _, _ = await _order(engine, "before")
        assert status in (201, 202)
        server.process.send_signal(signal.SIGSTOP)
        try:
            # The first requests wait out the command timeout, then the breaker opens.
            first = await asyncio.gather(*(_order(engine, f"down-{i}") for i in range(5)))
            assert all(s == 503 for s, _, _, _ in first), [s for s, _, _, _ in first]
            assert all(b["code"] == "unavailable" and "Retry-After" in h
                       for _, b, h, _ in first)
            # Open: answered at once, no request waits for a Redis that does not answer.
            quick = [await _order(engine, f"open-{i}") for i in range(20)]
            assert all(s == 503 for s, _, _, _ in quick)
            assert max(took for _, _, _, took in quick) < 0.2
            assert all(int(h["Retry-After"]) >= 1 for _, _, h, _ in quick)
            metrics = await (await engine.http.get("/metrics")).text()
            opened = [line for line in metrics.splitlines()
                      if line.startswith("kamigate_breaker_opened_total ")]
            assert opened and float(opened[0].split()[1]) >= 1
            assert "kamigate_breaker_state 2.0" in metrics or \
                "kamigate_breaker_state 1.0" in metrics
            health = await engine.http.get("/healthz")
            assert health.status == 200  # health stays open
        finally:
            server.process.send_signal(signal.SIGCONT)
        # Recovery by itself: within open_s plus a probe, orders succeed again.
        deadline = time.monotonic() + 10
        recovered = False
        while time.monotonic() < deadline and not recovered:
            status, _, _, _ = await _order(engine, f"after-{time.monotonic()}")
            recovered = status in (201, 202)
            await asyncio.sleep(0.1)
        assert recovered
        answers = [await _order(engine, f"steady-{i}") for i in range(10)]
        assert all(s in (201, 202) for s, _, _, _ in answers)
    finally:
        await engine.close()
        server.stop()


async def test_health_and_metrics_answers_never_close_the_breaker(
        engine_factory: EngineFactory) -> None:
    """/healthz, /readyz and /metrics pass the breaker and need not reach Redis: a load
    balancer polling them while the breaker's probe is out must not close it (sending the
    spike back to a Redis that may still be down), nor reset the failures counted while it
    is closed."""
    engine = await engine_factory(make_settings(breaker={"failures": 3, "open_s": 0.2}))
    breaker = engine.http.server.app[BREAKER]
    breaker.failure()
    breaker.failure()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await engine.http.get(path)).status in (200, 503)
    breaker.failure()  # the third in a row: the polls in between did not reset the count
    assert breaker.state == "open"
    await asyncio.sleep(0.25)
    assert breaker.allow() and breaker.state == "half_open"  # the probe is out
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await engine.http.get(path)).status in (200, 503)
    assert breaker.state == "half_open"
    breaker.success()  # the probe's own answer closes it
    assert breaker.state == "closed"
