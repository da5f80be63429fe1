"""Storefront events: points granted, lots about to expire and compensation reach the
storefront's events_url, signed like order webhooks, once per movement, in order per buyer."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from redis.asyncio import Redis

from engine.clock import rfc3339
from engine.store import keys, wallet_keys, watch_keys
from engine.wallet import coupons, ledger
from engine.worker.delays import DelayWatch
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_B_KEY,
    EngineFactory,
    auth,
    eventually,
    make_settings,
    settings_dict,
)
from tests.event_receiver import SECRET, EventReceiver
from tests.test_points import POINTS, PRICED, move

DAY_MS = 86_400_000


def events_settings(url: str, **sections: Any) -> Any:
    raw = settings_dict(points={**POINTS, **sections.pop("points", {})},
                        skus=sections.pop("skus", PRICED),
                        webhooks={"first_retry_s": 0.05, "max_retry_s": 0.2,
                                  "allow_private": True}, **sections)
    raw["storefronts"][0].update(events_url=url, webhook_secret=SECRET)
    return make_settings(**raw)


async def test_a_grant_is_told_once_signed(engine_factory: EngineFactory,
                                           receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    engine = await engine_factory(events_settings(url))
    for _ in range(3):  # replays move nothing, so they tell nothing
        status, moved = await move(engine, "ev-alice", 500, idempotency_key="g-1",
                                   reason="signup", expires_at="2099-01-01T00:00:00Z")
        assert status == 201
    await move(engine, "ev-alice", 200, reason="promo")
    await eventually(lambda: len(events.events) >= 2, timeout=10)
    first, second = events.events[:2]
    assert events.names[:2] == ["points.granted", "points.granted"]
    assert first["event"] == "points.granted" and first["storefront"] == "shop-a"
    assert (first["buyer"], first["points"], first["balance"], first["reason"]) == \
        ("ev-alice", 500, 500, "signup")
    assert first["expires_at"] == "2099-01-01T00:00:00.000Z"
    assert first["entry_id"] == moved["entry_id"] and first["order_id"] is None
    assert (second["points"], second["balance"]) == (200, 700)  # in order per buyer
    assert first["id"] != second["id"] and events.signatures_ok
    await asyncio.sleep(0.5)
    assert len(events.events) == 2


async def test_a_storefront_without_events_url_is_told_nothing(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    _, url = receiver
    engine = await engine_factory(events_settings(url))
    shard = wallet_keys.shard_of_wallet("shop-b", "quiet", 4)
    before = await redis.xlen(keys.outbox(shard))
    status, _ = await move(engine, "quiet", 300, key=SHOP_B_KEY)
    assert status == 201
    assert await redis.xlen(keys.outbox(shard)) == before
    assert await redis.zcard(wallet_keys.wallet_reminders(shard)) == 0


async def test_a_lot_about_to_expire_is_reminded_once(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    events, url = receiver
    engine = await engine_factory(events_settings(url, points={"remind_before_days": 30}))
    now = int(time.time() * 1000)
    expires = now + 31 * DAY_MS
    await move(engine, "ev-soon", 400, expires_at=rfc3339(expires))
    await move(engine, "ev-soon", 100, expires_at=rfc3339(expires + DAY_MS))
    await move(engine, "ev-soon", -450)  # the first lot is spent whole, the second in half
    await move(engine, "ev-late", 100, expires_at=rfc3339(now + 90 * DAY_MS))
    shard = wallet_keys.shard_of_wallet("shop-a", "ev-soon", 4)
    assert await ledger.remind_due(redis, shard, now) == 0  # not yet
    later = now + 3 * DAY_MS  # both lots of ev-soon are within 30 days of expiring
    sent = 0
    for _ in range(2):  # a second sweep finds nothing left to remind of
        sent += sum([await ledger.remind_due(redis, s, later) for s in range(4)])
    assert sent == 1  # the spent lot is not reminded of; ev-late's is not due
    await eventually(lambda: len(events.of("points.expiring")) >= 1, timeout=10)
    [expiring] = events.of("points.expiring")
    assert (expiring["buyer"], expiring["points"]) == ("ev-soon", 50)
    assert expiring["expires_at"] == rfc3339(expires + DAY_MS)


async def test_earned_points_are_told_with_their_order(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    engine = await engine_factory(events_settings(url))
    await engine.import_codes("card-100", ["EARN-1"])
    status, held = await engine.order(buyer="ev-earner")  # 10.00 in cash: held
    assert status == 201 and held["status"] == "held", held
    resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers={"Authorization": "Bearer key-shop-a"})
    assert resp.status == 200
    await eventually(lambda: len(events.of("points.granted")) >= 1, timeout=10)
    [earned] = events.of("points.granted")
    assert (earned["buyer"], earned["points"], earned["order_id"], earned["reason"]) == \
        ("ev-earner", 10, held["order_id"], "earned")


async def test_events_wait_for_a_receiver_that_is_down(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str]) -> None:
    """The same outbox and retries as order webhooks: nothing is lost while it fails."""
    events, url = receiver
    events.failures = 3
    engine = await engine_factory(events_settings(url))
    await move(engine, "ev-retry", 100)
    await move(engine, "ev-retry", 200)
    await eventually(lambda: len(events.events) >= 2, timeout=15)
    assert [e["points"] for e in events.events] == [100, 200] and events.calls == 5


async def test_a_ticket_later_than_its_eta_is_told_once_with_the_new_eta(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    events, url = receiver
    settings = events_settings(url, waiting_room={"delay_notice_s": 1})
    engine = await engine_factory(settings)
    first = (await engine.order(sku="card-free", buyer="d1"))[1]
    second = (await engine.order(sku="card-free", buyer="d2"))[1]
    other_shop = (await engine.order(key=SHOP_B_KEY, sku="card-free", buyer="d3"))[1]
    assert {first["status"], second["status"], other_shop["status"]} == {"queued"}
    shard = keys.shard_of_sku("card-free", 4)
    watch = DelayWatch(settings)
    rates = {"line:card-free": 1.0}  # one order a second leaves the line
    now = int(time.time() * 1000)
    assert await watch.round(redis, shard, now, rates, force=True) == 0  # expectations only
    promised = dict(await redis.zrange(watch_keys.promised(shard), 0, -1, withscores=True))
    assert promised == {first["order_id"].encode(): now + 1000 + 1000,  # late 1 s after
                        second["order_id"].encode(): now + 2000 + 1000}  # shop-b: no events
    later = now + 2500  # the first is 1.5 s past its ETA, the second 0.5 s
    assert await watch.round(redis, shard, later, rates, force=True) == 1
    assert await watch.round(redis, shard, later, rates, force=True) == 0  # told once
    await eventually(lambda: len(events.of("order.delayed")) >= 1, timeout=10)
    [delayed] = events.of("order.delayed")
    assert (delayed["order_id"], delayed["buyer"], delayed["sku"]) == \
        (first["order_id"], "d1", "card-free")
    assert delayed["was_expected_at"] == rfc3339(now + 1000)
    assert delayed["expected_at"] == rfc3339(later + 1000) and delayed["eta_s"] == 1.0
    assert events.names[-1] == "order.delayed"
    assert await redis.zscore(watch_keys.promised(shard), first["order_id"]) == later + 2000
    # served: it leaves the watch, nothing more is told
    await engine.import_codes("card-free", ["D-1", "D-2", "D-3"])
    await eventually(lambda: _decided(engine, second["order_id"]), timeout=10)
    assert await watch.round(redis, shard, later + 60_000, rates, force=True) == 0
    assert await redis.zcard(watch_keys.promised(shard)) == 0


async def test_with_a_delay_factor_a_ticket_is_late_after_that_many_etas(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    events, url = receiver
    settings = events_settings(url, waiting_room={"delay_notice_s": 1, "delay_factor": 3})
    engine = await engine_factory(settings)
    tickets = [(await engine.order(sku="card-free", buyer=f"f{i}"))[1] for i in range(10)]
    shard = keys.shard_of_sku("card-free", 4)
    watch = DelayWatch(settings)
    rates = {"line:card-free": 1.0}  # one a second: the tenth is expected in 10 s
    now = int(time.time() * 1000)
    assert await watch.round(redis, shard, now, rates, force=True) == 0
    tenth = tickets[9]["order_id"]
    assert await redis.zscore(watch_keys.promised(shard), tenth) == now + 30_000  # 3 x 10 s
    assert await redis.zscore(watch_keys.promised(shard), tickets[0]["order_id"]) == \
        now + 3000  # 3 x 1 s (more than 1 s + delay_notice_s)
    # 12 s on (the line has not moved), the tenth is 2 s past its ETA but not yet 3 x late;
    # the first four are (3, 6, 9 and 12 s)
    assert await watch.round(redis, shard, now + 12_000, rates, force=True) == 4
    await eventually(lambda: len(events.of("order.delayed")) >= 4, timeout=10)
    told = {e["order_id"] for e in events.of("order.delayed")}
    assert told == {t["order_id"] for t in tickets[:4]}
    # those four are expected again at their new ETA (12 s + 1..4 s), late by the same rule
    # (12 s + 3..12 s); at 30 s all ten are late
    assert await watch.round(redis, shard, now + 30_001, rates, force=True) == 10


async def _decided(engine: Any, order_id: str) -> bool:
    resp = await engine.http.get(f"/v1/orders/{order_id}",
                                 headers={"Authorization": "Bearer key-shop-a"})
    return bool((await resp.json())["status"] == "fulfilled")


async def test_coupons_issued_and_about_to_expire_are_told_with_their_code(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    events, url = receiver
    settings = events_settings(url, coupon_templates=[
        {"id": "week", "kind": "amount", "amount": 300, "valid_days": 7,
         "remind_before_days": 2, "per_buyer": 0}])
    engine = await engine_factory(settings)
    resp = await engine.http.post("/v1/buyers/ev-coupon/coupons", json={"template": "week"},
                                  headers={"Authorization": "Bearer key-shop-a"})
    coupon = await resp.json()
    await eventually(lambda: len(events.of("coupon.issued")) >= 1, timeout=10)
    [issued] = events.of("coupon.issued")
    assert issued["buyer"] == "ev-coupon" and issued["coupon"] == coupon
    shard = wallet_keys.shard_of_wallet("shop-a", "ev-coupon", 4)
    soon = int(time.time() * 1000) + 5 * DAY_MS + 60_000  # within 2 days of its end
    for _ in range(2):
        await coupons.sweep(redis, settings, shard, soon)
    await eventually(lambda: len(events.of("coupon.expiring")) >= 1, timeout=10)
    await asyncio.sleep(0.3)
    [expiring] = events.of("coupon.expiring")
    assert expiring["coupon"]["code"] == coupon["code"]
    assert expiring["coupon"]["status"] == "active"


async def test_low_stock_is_told_once_until_it_recovers(
        engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
        redis: Redis) -> None:
    events, url = receiver
    settings = events_settings(url, skus=[{"id": "card-100", "low_stock": 5},
                                          {"id": "card-free"}])
    engine = await engine_factory(settings)
    await engine.import_codes("card-100", [f"LOW-{i}" for i in range(6)])
    for buyer in ("l1", "l2"):  # 4 left: under 5
        status, _ = await engine.order(buyer=buyer)
        assert status == 201
    await eventually(lambda: len(events.of("stock.low")) >= 1, timeout=10)
    [low] = events.of("stock.low")
    assert (low["sku"], low["available"], low["low_stock"]) == ("card-100", 4, 5)
    assert "buyer" not in low
    await engine.order(buyer="l3")  # lower still: not told again
    metrics = await (await engine.http.get("/metrics")).text()
    assert 'kamigate_stock_low{sku="card-100"} 1.0' in metrics
    await engine.import_codes("card-100", [f"MORE-{i}" for i in range(10)], lot="lot2")
    await asyncio.sleep(1.2)  # two rounds of the worker's watch: recovered (13 > 6)
    for buyer in range(9):  # 13 left, then 4: low again, told again
        await engine.order(buyer=f"m{buyer}")
    await eventually(lambda: len(events.of("stock.low")) >= 2, timeout=10)
    resp = await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))
    actions = [e["action"] for e in (await resp.json())["events"] if e.get("who") == "worker"]
    assert actions[:3] == ["stock.low", "stock.recovered", "stock.low"], actions
