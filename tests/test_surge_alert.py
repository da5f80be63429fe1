"""Surge (爆单) alerts: a 10x spike over the recent baseline fires once and clears once, as a
log line, a metric, an audit entry and a call to the operators' webhook."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import (
    ADMIN_KEY,
    SHOP_A_KEY,
    EngineFactory,
    auth,
    eventually,
    make_settings,
)


async def _offer(engine: Any, rate: float, seconds: float, tag: str) -> None:
    """Orders at `rate` per second for `seconds`, in 0.1 s slices."""
    started = time.monotonic()
    slices = int(seconds * 10)
    for n in range(slices):
        await asyncio.gather(*(engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
            "sku": "card-100", "qty": 1, "buyer": f"{tag}-{n}-{i}", "wait_ms": 0})
            for i in range(int(rate / 10))))
        await asyncio.sleep(max(0.0, started + (n + 1) / 10 - time.monotonic()))


async def test_a_tenfold_spike_alerts_once_and_clears_once(
        engine_factory: EngineFactory) -> None:
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alerts", handle)
    receiver = TestServer(app)
    await receiver.start_server()
    try:
        settings = make_settings(surge={
            "factor": 10.0, "clear_factor": 2.0, "min_rate": 20.0, "baseline_s": 4.0,
            "hold_s": 1.0, "webhook_url": str(receiver.make_url("/alerts"))})
        engine = await engine_factory(settings)
        # 30x the calm rate, for 4 s: a margin of 3 over the 10x line, so a slow second on
        # a shared machine still leaves a whole second above it
        await _offer(engine, 5, 4.0, "calm")
        await _offer(engine, 150, 4.0, "spike")
        await _offer(engine, 5, 5.0, "after")
        await eventually(lambda: len(received) >= 2, what="the surge's end alert")
        events = [r["event"] for r in received]
        assert events == ["surge.start", "surge.end"], received
        assert received[0]["rate"] >= 10 * received[0]["baseline"]
        metrics = await (await engine.http.get("/metrics")).text()
        assert 'kamigate_surge_events_total{kind="start"} 1.0' in metrics
        assert 'kamigate_surge_events_total{kind="end"} 1.0' in metrics
        assert "kamigate_surge_active 0.0" in metrics
        audit = await (await engine.http.get("/admin/audit", headers=auth(ADMIN_KEY))).json()
        actions = [e["action"] for e in audit["events"] if e["kind"] == "admin"]
        assert actions.count("surge.start") == 1 and actions.count("surge.end") == 1
    finally:
        await receiver.close()


async def test_a_fivefold_rise_does_not_alert(engine_factory: EngineFactory) -> None:
    settings = make_settings(surge={"factor": 10.0, "min_rate": 5.0, "baseline_s": 4.0,
                                    "hold_s": 1.0})
    engine = await engine_factory(settings)
    await _offer(engine, 10, 3.0, "calm")
    await _offer(engine, 50, 3.0, "busy")
    metrics = await (await engine.http.get("/metrics")).text()
    assert "kamigate_surge_events_total" not in metrics or \
        'kamigate_surge_events_total{kind="start"}' not in metrics
