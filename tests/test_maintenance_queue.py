"""Maintenance that queues (`action = "queue"`): order writes during the window become tickets
(`queue.reason = "maintenance"`), served in line order when it ends (a virtual queue); a
scoped window (storefront:/sku:) is announced ahead from `notice_lead_s` like a global one.
The worker is stepped: what it has not done when the test looks, it did not do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    make_settings,
)
from tests.test_pages import get_state, token_of

SHARDS = 1


def _in(minutes: float) -> str:
    moment = datetime.now(UTC) + timedelta(minutes=minutes)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


async def _set(engine: Engine, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.put("/admin/maintenance", json=body, headers=auth(OPERATOR_KEY))
    return resp.status, await resp.json()


async def _stepped(engine_factory: EngineFactory, **sections: Any) -> tuple[Engine, Any]:
    engine = await engine_factory(make_settings(redis={"shards": SHARDS}, **sections),
                                  worker=False)
    worker = engine.stepped_worker()
    await worker.maintain_leases(force=True)
    return engine, worker


async def _statuses(redis: Redis, bodies: list[dict[str, Any]]) -> list[str]:
    found = []
    for body in bodies:
        record = await records.read(redis, body["order_id"])
        assert record is not None
        found.append(record.status)
    return found


async def test_orders_during_maintenance_wait_and_are_served_in_line_order(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    await engine.import_codes("card-100", codes("MQ", 5))
    status, _ = await _set(engine, mode="read_only", action="queue", reason="db upgrade",
                           eta=_in(30))
    assert status == 200
    tiers = [0, 2, 0]
    tickets = []
    for i, tier in enumerate(tiers):
        resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
            "sku": "card-100", "qty": 1, "buyer": f"mq{i}", "tier": tier})
        body = await resp.json()
        assert resp.status == 202 and body["status"] == "queued", body
        assert body["queue"]["reason"] == "maintenance" and "db upgrade" in body["notice"]
        assert 1700 < body["queue"]["eta_s"] <= 1800
        assert "db upgrade" in unquote(resp.headers["Kamigate-Notice"])
        tickets.append(body)
    resp = await engine.http.post("/v1/orders/batch", headers=auth(SHOP_A_KEY), json={
        "orders": [{"sku": "card-100", "qty": 1, "buyer": "mq-batch"}]})
    [item] = (await resp.json())["results"]
    assert item["status"] == "queued" and item["queue"]["reason"] == "maintenance", item
    # other writes stay closed: a cancel is 503 as before
    resp = await engine.http.delete(f"/v1/orders/{tickets[0]['order_id']}",
                                    headers=auth(SHOP_A_KEY))
    assert resp.status == 503
    # reads work; the ticket says why it waits
    resp = await engine.http.get(f"/v1/orders/{tickets[0]['order_id']}",
                                 headers=auth(SHOP_A_KEY))
    polled = await resp.json()
    assert polled["queue"]["reason"] == "maintenance" and "db upgrade" in polled["notice"]
    assert polled["queue"]["position"] == 2
    # the worker's rounds during the window serve nothing
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, tickets) == ["queued"] * 3
    assert int(await redis.hget(keys.sku_counts("card-100", 0), "available") or 0) == 5
    # the window ends: served in line order, nothing else to do
    assert (await _set(engine, mode="off"))[0] == 200
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, tickets) == ["fulfilled"] * 3
    got = {}
    for body in tickets:
        resp = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
        got[body["order_id"]] = (await resp.json())["codes"][0]
    line = sorted(range(3), key=lambda i: (-tiers[i], i))
    assert sorted(got, key=got.__getitem__) == [tickets[i]["order_id"] for i in line]


async def test_full_maintenance_that_queues_takes_orders_and_shows_their_page(
    engine_factory: EngineFactory,
) -> None:
    engine, _ = await _stepped(engine_factory)
    assert (await _set(engine, mode="full", action="queue", reason="moving racks"))[0] == 200
    status, body = await engine.order(buyer="fq")
    assert status == 202 and body["queue"]["reason"] == "maintenance", body
    resp = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 503  # full: reads are closed, the buyer's page is not
    page = f"/q/{body['order_id']}?t={token_of(engine, body['order_id'])}"
    status, state = await get_state(engine, page)
    assert status == 200 and state["reason"] == "maintenance"
    assert "moving racks" in state["notice"]


async def test_a_scoped_window_that_queues_holds_only_its_sku(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, worker = await _stepped(engine_factory)
    await engine.import_codes("card-100", codes("SQ", 2))
    await engine.import_codes("card-limited", codes("SL", 2))
    assert (await _set(engine, mode="read_only", action="queue", scope="sku:card-100",
                       reason="recount"))[0] == 200
    status, held = await engine.order(buyer="sq", wait_ms=0)
    assert status == 202 and held["queue"]["reason"] == "maintenance"
    status, other = await engine.order(sku="card-limited", buyer="sl", wait_ms=0)
    assert status == 202 and other["status"] == "pending"
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, [held, other]) == ["queued", "fulfilled"]
    assert (await _set(engine, mode="off", scope="sku:card-100"))[0] == 200
    await worker.chores(at_ms=now_ms())
    await worker.drain()
    assert await _statuses(redis, [held]) == ["fulfilled"]


async def test_a_maintenance_ticket_outlives_the_window_by_the_skus_ttl(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine, _ = await _stepped(engine_factory)
    assert (await _set(engine, mode="read_only", action="queue", eta=_in(60)))[0] == 200
    status, body = await engine.order(buyer="ttl")
    assert status == 202
    record = await records.read(redis, body["order_id"])
    assert record is not None
    expires = datetime.fromisoformat(body["queue"]["expires_at"].replace("Z", "+00:00"))
    left = expires - datetime.now(UTC)
    assert timedelta(minutes=60 + 29) < left <= timedelta(minutes=60 + 30)  # ttl 1800 s


async def test_config_maintenance_that_queues(engine_factory: EngineFactory) -> None:
    engine, _ = await _stepped(engine_factory, maintenance={
        "mode": "read_only", "action": "queue", "reason": "from the file"})
    status, body = await engine.order(buyer="cfg")
    assert status == 202 and body["queue"]["reason"] == "maintenance", body


async def test_a_scoped_window_is_announced_ahead(engine_factory: EngineFactory) -> None:
    engine, _ = await _stepped(engine_factory, maintenance={"notice_lead_s": 7200})
    await engine.import_codes("card-100", codes("AH", 2))
    assert (await _set(engine, mode="read_only", scope="sku:card-100", reason="recount",
                       starts_at=_in(60)))[0] == 200
    resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
        "sku": "card-100", "qty": 1, "buyer": "ah", "wait_ms": 0})
    body = await resp.json()
    assert resp.status == 202, body  # still open: it starts in an hour
    assert "recount" in body["notice"] and "from" in body["notice"]
    assert "recount" in unquote(resp.headers["Kamigate-Notice"])
    resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
        "sku": "card-limited", "qty": 1, "buyer": "ah2", "wait_ms": 0})
    assert "Kamigate-Notice" not in resp.headers and not (await resp.json()).get("notice")
    resp = await engine.http.get("/status", headers={"Accept": "application/json"})
    [window] = (await resp.json())["maintenance_scoped"]
    assert window["scope"] == "sku:card-100" and window["active"] is False
    html = await (await engine.http.get("/status")).text()
    assert "sku:card-100: recount" in html


async def test_a_bad_action_is_refused_naming_the_field(engine_factory: EngineFactory) -> None:
    engine, _ = await _stepped(engine_factory)
    status, problem = await _set(engine, mode="read_only", action="later")
    assert status == 422 and "action" in problem["detail"], problem
    status, body = await engine.order(buyer="open", wait_ms=0)
    assert status == 202 and body["status"] == "pending"  # nothing was switched
