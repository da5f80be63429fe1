"""A pause stops every issuance in its scope, not only what the front door admits: the worker
parks what it would otherwise fill (orders admitted just before the pause, overflow tickets it
releases, the sold-out line run by an import or a hold given back) as paused tickets, served
in line order when the pause ends; `exempt_tiers` lets the named tiers through. The worker is
stepped and its clock driven: nothing here sleeps to show that something did not happen."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    STORES,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
)

SHARDS = 1  # every SKU on shard 0: the keys below name it


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _pause(engine: Engine, **body: Any) -> dict[str, Any]:
    resp = await engine.http.post("/admin/pause", json=body, headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()
    found: dict[str, Any] = await resp.json()
    return found


async def _resume(engine: Engine, scope: str) -> None:
    resp = await engine.http.post("/admin/resume", json={"scope": scope},
                                  headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()


async def _statuses(redis: Redis, bodies: list[dict[str, Any]]) -> list[tuple[str, str]]:
    found = []
    for body in bodies:
        record = await records.read(redis, body["order_id"])
        assert record is not None
        found.append((record.status, record.reason))
    return found


async def _available(redis: Redis, sku: str = "card-100") -> int:
    return int(await redis.hget(keys.sku_counts(sku, 0), "available") or 0)


async def _served_in_order(engine: Engine, bodies: list[dict[str, Any]]) -> list[str]:
    """The order ids sorted by the code each got (codes leave a lot in import order)."""
    got = {}
    for body in bodies:
        resp = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
        view = await resp.json()
        assert view["status"] == "fulfilled", view
        got[body["order_id"]] = view["codes"][0]
    return sorted(got, key=got.__getitem__)


async def _stepped(engine_factory: EngineFactory, **sections: Any) -> tuple[Engine, Any]:
    engine = await engine_factory(make_settings(redis={"shards": SHARDS}, **sections),
                                  worker=False)
    return engine, engine.stepped_worker()


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_orders_admitted_before_the_pause_wait_and_are_served_in_line_order(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    await engine.import_codes("card-100", codes("PB", 5))
    tiers = [0, 1, 0]
    pending = []
    for i, tier in enumerate(tiers):
        status, body = await engine.order(buyer=f"pb{i}", tier=tier, wait_ms=0)
        assert status == 202 and body["status"] == "pending", body
        pending.append(body)
    until = datetime.now(UTC) + timedelta(minutes=10)
    await _pause(engine, scope="sku:card-100", reason="supplier late", until=_rfc3339(until))
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, pending) == [("queued", "paused")] * 3
    assert await _available(redis) == 5  # nothing issued
    assert await redis.zcard(keys.parked_line("card-100", "shop-a", 0)) == 3
    resp = await engine.http.get(f"/v1/orders/{pending[0]['order_id']}",
                                 headers=auth(SHOP_A_KEY))
    view = await resp.json()
    assert view["queue"]["reason"] == "paused" and "supplier late" in view["notice"]
    assert view["queue"]["position"] == 2  # the tier-1 order went ahead of it
    # the pause ends: served in line order (tier, then arrival), with no other action
    await worker.chores(at_ms=int(until.timestamp() * 1000) + 1)
    await worker.drain()
    order = sorted(range(3), key=lambda i: (-tiers[i], i))
    assert await _served_in_order(engine, pending) == [pending[i]["order_id"] for i in order]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_waiting_order_parked_by_the_worker_is_answered_as_a_paused_ticket(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    await engine.import_codes("card-100", codes("PW", 2))
    answer = asyncio.create_task(engine.order(buyer="pw", wait_ms=5000))
    await eventually(lambda: _stream_length(redis), timeout=3)  # admitted, not yet claimed
    await _pause(engine, scope="global", reason="stocktaking")
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    status, body = await answer
    assert status == 202 and body["status"] == "queued", body
    assert body["queue"]["reason"] == "paused" and "stocktaking" in body["notice"]
    assert await _available(redis) == 2


async def _stream_length(redis: Redis) -> bool:
    return int(await redis.xlen(keys.stream(0))) > 0


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_an_import_during_the_pause_does_not_serve_the_sold_out_line(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    line = []
    for i in range(4):
        status, body = await engine.order(buyer=f"so{i}", wait_ms=0)
        assert status == 202, body
        line.append(body)
    await worker.drain()
    assert await _statuses(redis, line) == [("queued", "sold_out")] * 4
    await _pause(engine, scope="sku:card-100", reason="holiday")
    await worker.chores(at_ms=now_ms())
    await engine.import_codes("card-100", codes("SO", 4))  # kicks the line
    await worker.drain()
    assert await _statuses(redis, line) == [("queued", "paused")] * 4
    assert await _available(redis) == 4
    await _resume(engine, "sku:card-100")
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _served_in_order(engine, line) == [b["order_id"] for b in line]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_codes_given_back_by_an_expired_hold_wait_for_the_pause_to_end(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    await engine.import_codes("card-100", codes("HX", 1))
    status, held = await engine.order(buyer="holder", hold_s=60, wait_ms=0)
    assert status == 202
    await worker.drain()
    assert (await _statuses(redis, [held]))[0][0] == "held"
    status, waiting = await engine.order(buyer="waiter", wait_ms=0)
    await worker.drain()
    assert await _statuses(redis, [waiting]) == [("queued", "sold_out")]
    await _pause(engine, scope="storefront:shop-a", reason="audit")
    later = now_ms() + 61_000
    await worker.chores(at_ms=later)  # the hold runs out: its code goes back, the line runs
    await worker.drain()
    assert (await _statuses(redis, [held]))[0][0] == "expired"
    assert await _statuses(redis, [waiting]) == [("queued", "paused")]
    assert await _available(redis) == 1


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_overflow_tickets_released_during_the_pause_are_parked(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(
        engine_factory, limits={"global": {"rate": 0.001, "burst": 1}})
    await engine.import_codes("card-100", codes("OV", 5))
    bodies = []
    for i in range(3):
        status, body = await engine.order(buyer=f"ov{i}", wait_ms=0)
        assert status == 202, body
        bodies.append(body)
    assert [b["status"] for b in bodies[1:]] == ["queued", "queued"]
    await _pause(engine, scope="sku:card-100", reason="recount")
    worker.use(make_settings(redis={"shards": SHARDS}))  # the worker releases at once
    await worker.maintain_leases(force=True)
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, bodies) == [("queued", "paused")] * 3
    assert await _available(redis) == 5


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_exempt_tiers_are_served_during_an_operator_pause(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    line = []
    for buyer, tier in (("plain", 0), ("vip", 9), ("plain2", 0)):
        status, body = await engine.order(buyer=buyer, tier=tier, wait_ms=0)
        assert status == 202
        line.append(body)
    await worker.drain()
    entry = await _pause(engine, scope="sku:card-100", reason="holiday", exempt_tiers=[9])
    assert entry["exempt_tiers"] == [9]
    await worker.chores(at_ms=now_ms())
    await engine.import_codes("card-100", codes("EX", 5))
    await worker.drain()
    assert [s for s, _ in await _statuses(redis, line)] == ["queued", "fulfilled", "queued"]
    # at the door: a new VIP order goes through, a plain one waits
    status, vip = await engine.order(buyer="vip2", tier=9, wait_ms=0)
    assert status == 202 and vip["status"] == "pending"
    status, plain = await engine.order(buyer="plain3", wait_ms=0)
    assert status == 202 and plain["queue"]["reason"] == "paused"
    await worker.drain()
    assert (await _statuses(redis, [vip]))[0][0] == "fulfilled"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_exempt_tiers_of_a_config_pause(engine_factory: EngineFactory, redis: Redis
                                              ) -> None:
    start = datetime.now(UTC) - timedelta(hours=1)
    engine = await engine_factory(make_settings(pauses=[{
        "scope": "global", "starts_at": _rfc3339(start),
        "ends_at": _rfc3339(start + timedelta(days=1)), "exempt_tiers": [8, 9]}]))
    await engine.import_codes("card-100", codes("CX", 3))

    async def door_sees_it() -> bool:
        resp = await engine.http.get("/admin/pauses", headers=auth(OPERATOR_KEY))
        return bool((await resp.json())["active"])

    await eventually(door_sees_it, timeout=3)
    status, vip = await engine.order(buyer="vip", tier=8)
    assert status == 201 and vip["status"] == "fulfilled"
    status, plain = await engine.order(buyer="plain", tier=7)
    assert status == 202 and plain["queue"]["reason"] == "paused"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_exempt_tiers_are_checked(engine: Engine) -> None:
    for tiers in ([10], [-1], ["9"], 9):
        resp = await engine.http.post("/admin/pause", headers=auth(OPERATOR_KEY), json={
            "scope": "global", "exempt_tiers": tiers})
        problem = await resp.json()
        assert resp.status == 422 and "exempt_tiers" in problem["detail"], problem
    resp = await engine.http.get("/admin/pauses", headers=auth(OPERATOR_KEY))
    assert (await resp.json())["active"] == []
