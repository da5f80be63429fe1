"""Webhooks under attack: a notify_url that points into the engine's own network (SSRF), one
storefront's slow receiver against everyone else's webhooks, and events or records the worker
cannot handle. Each test sends the attack as it would come."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from engine import config
from engine.config.settings import Webhooks
from engine.store import keys
from engine.wire import StreamOrder, msgpack_encode
from engine.worker.webhook_sender import HostBackoff, WebhookSender
from engine.worker.webhooks import Dispatcher
from tests.conftest import (
    SHOP_A_KEY,
    SHOP_B_KEY,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
    settings_dict,
)

PRIVATE_URLS = [
    "http://127.0.0.1/hook", "http://localhost:8080/hook", "http://sub.localhost/hook",
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.5/hook", "http://172.16.0.1/",
    "http://192.168.1.1/hook", "http://100.64.0.1/hook", "http://0.0.0.0/hook",
    "http://0x7f000001/hook", "http://2130706433/hook", "http://127.1/hook",
    "http://0177.0.0.1/hook", "http://[::1]/hook", "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:7f00:1]/hook", "http://[fd00::1]/hook", "http://[fe80::1]/hook",
    "https://LOCALHOST./hook", "http://[2002:7f00:1::]/hook",
    "http://[64:ff9b::a9fe:a9fe]/latest/", "http://[::ffff:0:a9fe:a9fe]/",
    "http://[::a9fe:a9fe]/", "http://[64:ff9b:1::1]/", "http://[fec0::1]/",
]


class Receiver:
    """A webhook endpoint that can answer late; counts calls and calls at once."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.events: list[dict[str, Any]] = []
        self.calls = 0
        self.now = 0
        self.most_at_once = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.now += 1
        self.most_at_once = max(self.most_at_once, self.now)
        try:
            body = await request.json()
            if self.delay:
                await asyncio.sleep(self.delay)
            self.events.append(body)
            return web.Response(status=204)
        finally:
            self.now -= 1


async def _serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    return server


# -- 3. SSRF ------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", PRIVATE_URLS)
async def test_an_order_may_not_point_its_webhook_into_private_networks(
        engine_factory: EngineFactory, redis: Redis, url: str) -> None:
    engine = await engine_factory(worker=False)
    status, problem = await engine.order(notify_url=url, wait_ms=0)
    assert status == 422 and problem["code"] == "invalid_request", problem
    assert [e["field"] for e in problem["errors"]] == ["notify_url"]
    assert await redis.keys("kg:{s*}:o:*") == []  # nothing admitted
    batch = {"orders": [{"sku": "card-100", "qty": 1, "buyer": "b", "notify_url": url}]}
    resp = await engine.http.post("/v1/orders/batch", json=batch, headers=auth(SHOP_A_KEY))
    [item] = (await resp.json())["results"]
    assert item["code"] == "invalid_request" and item["errors"][0]["field"] == \
        "orders[0].notify_url"


async def test_public_destinations_and_allow_private(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(worker=False)
    status, order = await engine.order(notify_url="https://hooks.example.com/k", wait_ms=0)
    assert status == 202, order
    private = await engine_factory(make_settings(webhooks={"allow_private": True}),
                                   worker=False)
    status, order = await private.order(notify_url="http://10.0.0.5/hook", wait_ms=0)
    assert status == 202, order


async def test_notify_hosts_bind_a_storefront_to_its_own_receivers(
        engine_factory: EngineFactory) -> None:
    raw = settings_dict()
    raw["storefronts"][0]["notify_hosts"] = ["hooks.shop-a.example"]
    engine = await engine_factory(make_settings(**raw), worker=False)
    status, problem = await engine.order(notify_url="https://attacker.example/steal", wait_ms=0)
    assert status == 422 and problem["errors"][0]["field"] == "notify_url"
    assert "notify_hosts" in problem["errors"][0]["message"]
    status, _ = await engine.order(notify_url="https://HOOKS.shop-a.example/k", wait_ms=0)
    assert status == 202
    status, _ = await engine.order(key=SHOP_B_KEY, notify_url="https://any.example/", wait_ms=0)
    assert status == 202  # shop-b sets no notify_hosts


async def test_a_name_that_resolves_to_loopback_is_not_called() -> None:
    """The connect-time check sees the address after DNS: `localhost` (from /etc/hosts here,
    a rebinding DNS name elsewhere) is refused like 127.0.0.1; allowed, it is called."""
    receiver = Receiver()
    server = await _serve(receiver)
    url = f"http://localhost:{server.port}/hook"
    try:
        guarded = WebhookSender(Webhooks())
        sent = await guarded.post("shop-a", "localhost", url, b"{}", {})
        assert not sent.ok and guarded.guard.refused >= 1 and receiver.calls == 0
        await guarded.close()
        allowed = WebhookSender(Webhooks(allow_private=True))
        assert (await allowed.post("shop-a", "localhost", url, b"{}", {})).ok
        assert receiver.calls == 1
        await allowed.close()
    finally:
        await server.close()


# -- 4. one slow receiver against every other webhook --------------------------------------------
async def test_a_hanging_receiver_holds_up_no_other_storefront(
        engine_factory: EngineFactory) -> None:
    slow, fast = Receiver(delay=30.0), Receiver()
    slow_server, fast_server = await _serve(slow), await _serve(fast)
    try:
        engine = await engine_factory(make_settings(webhooks={
            "allow_private": True, "timeout_s": 1.0, "first_retry_s": 0.05,
            "max_retry_s": 0.2, "per_storefront": 4}))
        await engine.import_codes("card-100", codes("HANG", 41))
        hang = str(slow_server.make_url("/hook"))
        for i in range(40):
            assert (await engine.order(notify_url=hang, buyer=f"h{i}"))[0] == 201
        # every hanging delivery has been tried and is now being retried
        await eventually(lambda: slow.calls >= 60, timeout=30, what="the retries")
        started = time.monotonic()
        status, _ = await engine.order(key=SHOP_B_KEY, notify_url=str(
            fast_server.make_url("/hook")), buyer="other-shop")
        assert status == 201
        await eventually(lambda: len(fast.events) == 1, timeout=10, what="shop-b's webhook")
        assert time.monotonic() - started < 1.0  # less than one of the hanging attempts
        assert slow.most_at_once <= 4  # per_storefront: it never held more slots
    finally:
        await slow_server.close()
        await fast_server.close()


# -- 9. what the worker cannot handle does not stop it ---------------------------------------------
K1 = base64.b64encode(b"1" * 32).decode()
K2 = base64.b64encode(b"2" * 32).decode()


def _sealed(**keyring: str) -> config.Settings:
    current = sorted(keyring)[-1]
    return make_settings(redis={"shards": 1}, webhooks={"allow_private": True},
                         codes={"keys": keyring, "current": current,
                                "fingerprint_key": "fingerprint-key-0123456789"})


async def test_confirm_with_its_key_removed_commits_answers_and_keeps_the_worker_going(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """A held order sealed with a key the operator then removed: confirm commits and answers
    200 without the codes (never a 500 after the commit), its webhook goes to the dead
    letters, and the next order's webhook is delivered as usual."""
    receiver = Receiver()
    server = await _serve(receiver)
    hook = str(server.make_url("/hook"))
    try:
        first = await engine_factory(_sealed(k1=K1))
        await first.import_codes("card-100", codes("SEALED", 2))
        status, held = await first.order(hold_s=300, notify_url=hook)
        assert status == 201 and held["status"] == "held"
        await first.close()
        # k1 is gone from the config; new stock is sealed with k2
        engine = await engine_factory(_sealed(k2=K2))
        resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                      headers=auth(SHOP_A_KEY))
        body = await resp.json()
        assert resp.status == 200 and body["status"] == "fulfilled", body
        assert "codes" not in body and "key" in body["notice"]
        await eventually(lambda: _dead_letters(redis), what="the dead-lettered event")
        await engine.import_codes("card-100", codes("FRESH", 1), lot="fresh")
        status, after = await engine.order(notify_url=hook, buyer="after")
        assert status == 201
        await eventually(lambda: any(e["order_id"] == after["order_id"]
                                     for e in receiver.events), what="the next webhook")
        # with k1 back, the order shows its codes
        again = await engine_factory(_sealed(k1=K1, k2=K2), worker=False)
        got = await (await again.http.get(f"/v1/orders/{held['order_id']}",
                                          headers=auth(SHOP_A_KEY))).json()
        assert got["status"] == "fulfilled" and len(got["codes"]) == 1
    finally:
        await server.close()


async def _dead_letters(redis: Redis) -> bool:
    entries = await redis.xrange(keys.webhook_dead(0))
    return any(b"do not open" in fields[b"why"] for _, fields in entries)


async def test_an_unreadable_record_does_not_stop_expiry(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(make_settings(redis={"shards": 1}), worker=False)
    worker = engine.stepped_worker()
    await engine.import_codes("card-100", codes("EXP", 1))
    status, held = await engine.order(hold_s=1, wait_ms=0)
    assert status == 202
    await worker.drain()
    broken = keys.new_order_id(0)
    await redis.hset(keys.order(broken, 0), mapping={"r": b"\xc1garbage", "st": "held"})
    await redis.zadd(keys.expiries(0), {broken: 0})  # due first, before the real hold
    await worker.chores(at_ms=int(time.time() * 1000) + 5000)
    got = await (await engine.http.get(f"/v1/orders/{held['order_id']}",
                                       headers=auth(SHOP_A_KEY))).json()
    assert got["status"] == "expired", got
    assert await redis.zscore(keys.expiries(0), broken) is None


# -- the outbox across workers, restarts and rule changes ------------------------------------------
@pytest.mark.parametrize("how", ["down", "hanging"])
async def test_a_new_owner_takes_over_a_dead_workers_events_once_and_in_order(
        redis: Redis, how: str) -> None:
    """Worker A reads an order's events and dies with them unsent: its receiver was down (A
    put them in the backlog) or hanging (A died mid-send). Worker B takes them over — from
    the backlog, or claimed once idle longer than two attempts — and delivers each exactly
    once, in order."""
    receiver = Receiver(delay=30.0 if how == "hanging" else 0.0)
    server = await _serve(receiver)
    hook = str(server.make_url("/hook"))
    settings = make_settings(redis={"shards": 1}, webhooks={
        "allow_private": True, "timeout_s": 0.2, "first_retry_s": 0.05, "max_retry_s": 0.1})
    shard = 0
    order = StreamOrder(keys.new_order_id(shard), "shop-a", "card-100", 1, "b", 0, 1,
                        notify_url=hook)
    await redis.hset(keys.order(order.order_id, shard),
                     mapping={"r": msgpack_encode(order), "st": "fulfilled", "c": 1, "u": 1})
    await redis.hset(keys.order(order.order_id, shard), "codes", "")
    for status in ("queued", "cancelled"):
        await redis.xadd(keys.outbox(shard), {"o": order.order_id, "st": status, "u": 2,
                                              "why": "", "x": 0, "p": 0})
    first = Dispatcher(settings, redis, "w-a")
    if how == "down":
        await server.close()  # the receiver is down while A tries
        await first.round([shard])
        await first.idle()
        assert await redis.hget(keys.webhook_waiting(shard), order.order_id)  # A's backlog
    else:
        await first.round([shard])
        await eventually(lambda: receiver.calls == 1, what="A's hanging attempt")
        await server.close()
    await first.close()  # A dies; its events stay pending under its name
    receiver.delay, receiver.calls = 0.0, 0
    server = await _serve(receiver)
    hook_now = str(server.make_url("/hook"))
    await redis.hset(keys.order(order.order_id, shard), "r",
                     msgpack_encode(msgspec.structs.replace(order, notify_url=hook_now)))
    second = Dispatcher(settings, redis, "w-b")
    try:
        async def all_sent() -> bool:
            await second.round([shard])
            await second.idle()
            return len(receiver.events) >= 2

        await eventually(all_sent, timeout=15, every=0.3, what="B's deliveries")
        await asyncio.sleep(0.5)
        await second.round([shard])
        await second.idle()
        assert [e["status"] for e in receiver.events] == ["queued", "cancelled"]
        assert (await redis.xpending(keys.outbox(shard), "webhooks"))["pending"] == 0
    finally:
        await second.close()
        await server.close()


async def test_turning_allow_private_off_also_drops_kept_alive_connections() -> None:
    receiver = Receiver()
    server = await _serve(receiver)
    url = f"http://127.0.0.1:{server.port}/hook"
    sender = WebhookSender(Webhooks(allow_private=True))
    try:
        assert (await sender.post("shop-a", "127.0.0.1", url, b"{}", {})).ok
        sender.use(Webhooks(allow_private=False))
        assert not (await sender.post("shop-b", "127.0.0.1", url, b"{}", {})).ok
        assert receiver.calls == 1
    finally:
        await sender.close()
        await server.close()


def test_one_storefronts_failures_do_not_back_off_anothers_receiver() -> None:
    backoff = HostBackoff()
    for _ in range(5):
        backoff.failed(("shop-a", "hooks.example"), 0.0, 1.0, 3600.0)
    assert backoff.wait_s(("shop-a", "hooks.example"), 1.0) > 0
    assert backoff.wait_s(("shop-b", "hooks.example"), 1.0) == 0
