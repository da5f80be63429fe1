"""Compensation: an order that got its codes late is compensated automatically, once; an
operator compensates a storefront's orders in a window, once per order per reason, audited."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.clock import now_ms, rfc3339
from engine.wallet import compensation
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
)
from tests.event_receiver import EventReceiver
from tests.test_points import assert_p1, points_settings, wallet_of
from tests.test_storefront_events import events_settings

LATE = {"delay_over_s": 1, "points": 150}


async def history(engine: Engine, buyer: str) -> list[dict[str, Any]]:
    resp = await engine.http.get(f"/v1/buyers/{buyer}/points/history", headers=auth(SHOP_A_KEY))
    entries: list[dict[str, Any]] = (await resp.json())["entries"]
    return entries


async def test_an_order_served_late_is_compensated_once(
        engine_factory: EngineFactory, redis: Redis,
        receiver: tuple[EventReceiver, str]) -> None:
    events, url = receiver
    engine = await engine_factory(events_settings(url, compensation=LATE))
    _, quick = await engine.order(sku="card-free", buyer="c-quick")  # queued: no stock
    _, late = await engine.order(sku="card-free", buyer="c-late")
    assert late["status"] == "queued"
    await asyncio.sleep(1.2)  # past delay_over_s
    await engine.import_codes("card-free", codes("LATE", 2))
    await eventually(lambda: len(events.of("compensation.granted")) >= 2, timeout=10)
    assert (await wallet_of(engine, "c-late"))["balance"] == 150
    [entry] = await history(engine, "c-late")
    assert (entry["kind"], entry["points"], entry["order_id"]) == \
        ("compensation", 150, late["order_id"])
    told = {e["order_id"]: e for e in events.of("compensation.granted")}
    assert told[late["order_id"]]["points"] == 150 and told[late["order_id"]]["coupon"] is None
    # an order served at once is not compensated
    await engine.import_codes("card-free", codes("NOW", 1), lot="lot2")
    _, prompt = await engine.order(sku="card-free", buyer="c-prompt")
    assert prompt["status"] == "fulfilled"
    # compensating again for the same reason moves nothing (a replayed settle entry)
    settings = engine.settings
    for order_id in (late["order_id"], quick["order_id"]):
        assert await compensation.compensate_late(redis, settings, order_id, now_ms()) == \
            "replay"
    await asyncio.sleep(0.3)
    assert (await wallet_of(engine, "c-prompt"))["balance"] == 0
    assert (await wallet_of(engine, "c-late"))["balance"] == 150
    await assert_p1(redis, "shop-a", "c-late")


async def test_a_late_held_order_is_compensated_when_it_is_paid(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings(compensation=LATE))
    _, paid = await engine.order(buyer="c-pays")  # priced: held once it has codes
    _, unpaid = await engine.order(buyer="c-walks")
    await asyncio.sleep(1.2)
    await engine.import_codes("card-100", codes("HELD", 2))
    await eventually(lambda: _status(engine, paid["order_id"], "held"), timeout=10)
    await eventually(lambda: _status(engine, unpaid["order_id"], "held"), timeout=10)
    resp = await engine.http.post(f"/v1/orders/{paid['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    await eventually(lambda: _balance(engine, "c-pays", 150 + 10), timeout=10)  # + earned
    assert (await wallet_of(engine, "c-walks"))["balance"] == 0  # not paid: not compensated


async def _status(engine: Engine, order_id: str, status: str) -> bool:
    resp = await engine.http.get(f"/v1/orders/{order_id}", headers=auth(SHOP_A_KEY))
    return bool((await resp.json())["status"] == status)


async def _balance(engine: Engine, buyer: str, points: int) -> bool:
    return bool((await wallet_of(engine, buyer))["balance"] == points)


async def compensate(engine: Engine, key: str = OPERATOR_KEY, **body: Any
                     ) -> tuple[int, dict[str, Any]]:
    now = now_ms()
    payload = {"storefront": "shop-a", "from": rfc3339(now - 3_600_000),
               "to": rfc3339(now + 60_000), "statuses": ["fulfilled", "cancelled"],
               "points": 100, "reason": "maintenance 12-03", **body}
    resp = await engine.http.post("/admin/compensations", json=payload, headers=auth(key))
    return resp.status, await resp.json()


async def test_an_operator_compensates_a_window_once_per_reason(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-free", codes("WIN", 3))
    served = [(await engine.order(sku="card-free", buyer=f"w{i}"))[1] for i in range(3)]
    _, waiting = await engine.order(sku="card-free", buyer="w-queued")
    _, cancelled = await engine.order(sku="card-free", buyer="w-cancel")
    await engine.http.delete(f"/v1/orders/{cancelled['order_id']}", headers=auth(SHOP_A_KEY))
    await engine.order(key="key-shop-b", sku="card-free", buyer="w-other-shop")
    status, done = await compensate(engine)
    assert status == 200, done
    assert done == {"orders": 4, "points": 400, "coupons": 0, "already": 0, "skipped": 0}
    assert {o["status"] for o in served} == {"fulfilled"} and waiting["status"] == "queued"
    for buyer in ("w0", "w1", "w2", "w-cancel"):
        assert (await wallet_of(engine, buyer))["balance"] == 100
        await assert_p1(redis, "shop-a", buyer)
    assert (await wallet_of(engine, "w-queued"))["balance"] == 0
    status, again = await compensate(engine, points=500)  # the same reason: nothing moves
    assert status == 200 and again == {"orders": 0, "points": 0, "coupons": 0,
                                       "already": 4, "skipped": 0}
    status, other = await compensate(engine, reason="surge 12-03", statuses=["queued"])
    assert status == 200 and other["orders"] == 1
    assert (await wallet_of(engine, "w0"))["balance"] == 100
    resp = await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))
    actions = [e for e in (await resp.json())["events"] if e.get("action") == "compensate"]
    assert len(actions) == 3 and actions[0]["who"] == "ops"
    assert actions[0]["details"]["reason"] == "maintenance 12-03"
    assert actions[0]["details"]["orders"] == 4 and actions[1]["details"]["already"] == 4


async def test_a_window_before_any_order_compensates_nobody(engine_factory: EngineFactory
                                                            ) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-free", codes("OLD", 1))
    await engine.order(sku="card-free", buyer="old")
    status, done = await compensate(engine, **{"from": "2020-01-01T00:00:00Z",
                                               "to": "2020-01-02T00:00:00Z"})
    assert status == 200 and done["orders"] == 0


@pytest.mark.parametrize(("body", "field"), [
    ({"storefront": "nope"}, "storefront"),
    ({"sku": "no-such-sku"}, "sku"),
    ({"to": "2020-01-01T00:00:00Z"}, "to"),
    ({"from": "yesterday"}, "from"),
    ({"statuses": []}, "statuses"),
    ({"statuses": ["lost"]}, "statuses"),
    ({"points": 0}, "points"),
    ({"points": -5}, "points"),
    ({"reason": ""}, "reason"),
    ({"coupon_template": "new-user-5"}, "coupon_template"),
    ({"colour": "red"}, "colour"),
])
async def test_bad_compensations_are_422_and_write_nothing(
        engine_factory: EngineFactory, redis: Redis, body: dict[str, Any], field: str) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-free", codes("BAD", 1))
    await engine.order(sku="card-free", buyer="bad-case")
    status, problem = await compensate(engine, **body)
    assert status == 422, problem
    assert any(field in e.get("field", "") for e in problem.get("errors", [])) or \
        field in problem.get("detail", ""), problem
    assert (await wallet_of(engine, "bad-case"))["balance"] == 0


async def test_a_viewer_may_not_compensate(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings())
    status, problem = await compensate(engine, key=VIEWER_KEY)
    assert status == 403, problem
    status, _ = await compensate(engine, key=SHOP_A_KEY)
    assert status in (401, 403)


async def test_compensation_can_be_a_coupon_once_per_reason(engine_factory: EngineFactory,
                                                            ) -> None:
    templates = [{"id": "sorry", "kind": "amount", "amount": 300, "per_buyer": 0}]
    engine = await engine_factory(points_settings(
        coupon_templates=templates,
        compensation={"delay_over_s": 1, "points": 0, "coupon_template": "sorry"}))
    _, late = await engine.order(sku="card-free", buyer="cp-late")
    await asyncio.sleep(1.2)
    await engine.import_codes("card-free", codes("CPL", 3))
    await eventually(lambda: _coupons_of(engine, "cp-late", 1), timeout=10)
    _, prompt = await engine.order(sku="card-free", buyer="cp-prompt")
    status, done = await compensate(engine, points=0, coupon_template="sorry",
                                    statuses=["fulfilled"])
    assert status == 200, done
    # cp-late has the automatic one (reason "delay"); this reason is new for both orders
    assert (done["orders"], done["coupons"], done["points"]) == (2, 2, 0), done
    status, again = await compensate(engine, points=0, coupon_template="sorry",
                                     statuses=["fulfilled"])
    assert (again["orders"], again["already"]) == (0, 2), again
    assert await _coupons_of(engine, "cp-late", 2) and await _coupons_of(engine, "cp-prompt", 1)
    assert late["status"] == "queued" and prompt["status"] == "fulfilled"


async def _coupons_of(engine: Engine, buyer: str, n: int) -> bool:
    resp = await engine.http.get(f"/v1/buyers/{buyer}/coupons", headers=auth(SHOP_A_KEY))
    return len((await resp.json())["coupons"]) == n
