"""Webhooks: signed, every event delivered in order per order, retried until the receiver
answers 2xx, without slowing intake."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.worker.webhook_sender import retry_delay, signature
from tests.conftest import EngineFactory, auth, codes, eventually, make_settings, settings_dict

SECRET = "whsec-test-secret-of-32-characters"


class Receiver:
    """A storefront's webhook endpoint that fails its first `failures` calls."""

    def __init__(self, failures: int = 0, delay: float = 0.0) -> None:
        self.failures = failures
        self.delay = delay
        self.calls = 0
        self.events: list[dict[str, Any]] = []
        self.signatures_ok = True

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        header = request.headers.get("Kamigate-Signature", "")
        parts = dict(p.split("=", 1) for p in header.split(","))
        expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        self.signatures_ok &= hmac.compare_digest(parts["v1"], expected)
        self.signatures_ok &= abs(int(parts["t"]) - time.time()) < 60
        assert request.headers["Kamigate-Event"] == "order.updated"
        if self.calls <= self.failures:
            return web.Response(status=503)
        self.events.append(json.loads(body))
        return web.Response(status=204)


async def _serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    return server


def _settings(**extra: Any) -> Any:
    # the receivers listen on loopback: allowed here, refused by default (tests/test_ssrf.py)
    raw = settings_dict(webhooks={"first_retry_s": 0.05, "max_retry_s": 0.2,
                                  "allow_private": True}, **extra)
    raw["storefronts"][0]["webhook_secret"] = SECRET
    from engine import config

    return config.from_mapping(raw, environ={})


def test_signature_matches_the_documented_recipe() -> None:
    body = b'{"order_id":"o_1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("k", body, 1700000000) == f"t=1700000000,v1={expected}"


def test_retry_delays_grow_and_are_capped() -> None:
    rng = random.Random(1)
    delays = [retry_delay(n, 1.0, 60.0, rng) for n in range(1, 10)]
    assert 0.5 <= delays[0] <= 1.5 and 4 <= delays[3] <= 12
    assert all(d <= 90 for d in delays)  # cap times the largest jitter


async def test_receiver_failing_three_times_gets_every_event_in_order(
    engine_factory: EngineFactory,
) -> None:
    receiver = Receiver(failures=3)
    server = await _serve(receiver)
    try:
        engine = await engine_factory(_settings())
        hook = str(server.make_url("/hook"))
        status, queued = await engine.order(notify_url=hook)  # no stock yet: queued
        assert status == 202
        await engine.import_codes("card-100", codes("WH", 1))  # now fulfilled
        await eventually(lambda: len(receiver.events) >= 2, timeout=15)
        statuses = [e["status"] for e in receiver.events]
        assert statuses == ["queued", "fulfilled"]
        assert receiver.events[1]["codes"] == ["WH-000000"]
        assert all(e["order_id"] == queued["order_id"] for e in receiver.events)
        assert receiver.calls == 5 and receiver.signatures_ok
    finally:
        await server.close()


async def test_cancel_and_expiry_are_sent(engine_factory: EngineFactory) -> None:
    receiver = Receiver()
    server = await _serve(receiver)
    try:
        settings = _settings(skus=[{"id": "card-100", "queue_ttl_s": 1}])
        engine = await engine_factory(settings)
        hook = str(server.make_url("/hook"))
        _, one = await engine.order(notify_url=hook, buyer="x1")
        _, two = await engine.order(notify_url=hook, buyer="x2")
        await engine.http.delete(f"/v1/orders/{one['order_id']}", headers=auth("key-shop-a"))
        await eventually(lambda: len(receiver.events) >= 4, timeout=15)
        seen = {(e["order_id"], e["status"]) for e in receiver.events}
        assert (one["order_id"], "cancelled") in seen and (two["order_id"], "expired") in seen
    finally:
        await server.close()


async def test_dead_receiver_never_slows_intake(engine_factory: EngineFactory) -> None:
    receiver = Receiver(delay=5.0)  # answers after the 5 s attempt time-out: never a 2xx
    server = await _serve(receiver)
    try:
        engine = await engine_factory(_settings())
        await engine.import_codes("card-100", codes("SLOW", 30))
        hook = str(server.make_url("/hook"))
        started = time.monotonic()
        for i in range(30):
            status, _ = await engine.order(notify_url=hook, buyer=f"s{i}")
            assert status == 201
        assert time.monotonic() - started < 3.0
    finally:
        await server.close()


async def test_orders_without_notify_url_send_nothing(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings())
    await engine.import_codes("card-100", codes("NN", 1))
    await engine.order()
    from engine.store import keys

    for shard in range(4):
        assert await engine_redis_len(engine, keys.outbox(shard)) == 0


async def engine_redis_len(engine: Any, key: str) -> int:
    from engine.store import connection

    client = connection.client(engine.url)
    try:
        return int(await client.xlen(key))
    finally:
        await client.aclose()


async def test_delivered_events_are_trimmed_from_the_outbox(
    engine_factory: EngineFactory,
) -> None:
    from engine.store import keys
    from engine.worker.waiting import trim_stream
    from engine.worker.webhook_backlog import GROUP

    receiver = Receiver()
    server = await _serve(receiver)
    try:
        engine = await engine_factory(_settings(redis={"shards": 1}))
        await engine.import_codes("card-100", codes("TR", 3))
        hook = str(server.make_url("/hook"))
        for i in range(3):
            await engine.order(notify_url=hook, buyer=f"t{i}")
        await eventually(lambda: len(receiver.events) >= 3, timeout=15)
        from engine.store import connection

        client = connection.client(engine.url)
        try:
            await eventually(lambda: _pending_zero(client), 10)
            await trim_stream(client, keys.outbox(0), GROUP)
            assert int(await client.xlen(keys.outbox(0))) == 0
        finally:
            await client.aclose()
    finally:
        await server.close()


async def _pending_zero(client: Any) -> bool:
    from engine.store import keys
    from engine.worker.webhook_backlog import GROUP

    pending = await client.xpending(keys.outbox(0), GROUP)
    return int(pending["pending"]) == 0
