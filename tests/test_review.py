"""Manual review and the block list: orders over a SKU's review_over_qty, or from reviewed
buyers or addresses, wait for an operator (reason `review`); approve serves them, reject returns
nothing to anyone; blocked buyers and addresses get 403 `blocked` and leave nothing behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from engine.store import keys, records
from engine.worker.consumer import Worker
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    SHOP_B_KEY,
    VIEWER_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
    settings_dict,
)

REVIEWED_SKUS = [
    {"id": "card-100", "max_qty": 10, "review_over_qty": 3},
    {"id": "card-limited", "max_qty": 5, "buyer_limit": 3},
]




async def _status_is(redis: Redis, order_id: str, status: str) -> None:
    async def reached() -> bool:
        record = await records.read(redis, order_id)
        return record is not None and record.status == status

    await eventually(reached)


async def _decide(engine: Engine, order_id: str, decision: str, key: str = OPERATOR_KEY
                  ) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.post(f"/admin/review/{order_id}", json={"decision": decision},
                                  headers=auth(key))
    return resp.status, await resp.json()


async def _review_list(engine: Engine, key: str = OPERATOR_KEY) -> list[dict[str, Any]]:
    resp = await engine.http.get("/admin/review", headers=auth(key))
    assert resp.status == 200
    orders: list[dict[str, Any]] = (await resp.json())["orders"]
    return orders


async def _sku(engine: Engine, sku: str = "card-100") -> dict[str, Any]:
    resp = await engine.http.get(f"/admin/skus/{sku}", headers=auth(VIEWER_KEY))
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def _get(engine: Engine, order_id: str, key: str = SHOP_A_KEY) -> dict[str, Any]:
    resp = await engine.http.get(f"/v1/orders/{order_id}", headers=auth(key))
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


async def _footprint(redis: Redis) -> tuple[list[str], list[int]]:
    """What an order leaves in Redis: records, idempotency keys, lines, stream entries."""
    found: list[str] = []
    for pattern in ("*:o:*", "*:idem:*", "*:parked:*", "*:review", "*:overflow:*",
                    "*:line:*", "*:bought:*"):
        found += [k.decode() if isinstance(k, bytes) else k for k in await redis.keys(pattern)]
    streams = [int(await redis.xlen(keys.stream(s))) for s in range(4)]
    return sorted(found), streams


async def _bought(engine: Engine, worker: Worker, **order: Any) -> dict[str, Any]:
    """Order without waiting, let the stepped worker decide it, and read it back."""
    status, body = await engine.order(wait_ms=0, **order)
    assert status == 202 and body["status"] == "pending", body
    await worker.drain()
    return await _get(engine, body["order_id"])


async def test_large_order_waits_for_review_then_approve_delivers(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(skus=REVIEWED_SKUS), worker=False)
    worker = engine.stepped_worker()
    await engine.import_codes("card-100", codes("RV", 10))
    small = await _bought(engine, worker, qty=3, buyer="small")  # at the limit: not reviewed
    assert small["status"] == "fulfilled"
    status, big = await engine.order(qty=4, buyer="big", buyer_ip="192.0.2.7")
    assert status == 202, big
    assert big["status"] == "queued" and big["queue"]["reason"] == "review"
    assert big["queue"]["eta_s"] is None  # an operator decides
    assert (await _get(engine, big["order_id"]))["queue"]["reason"] == "review"
    # the worker leaves it alone: a whole round of batches and chores later it still waits
    await worker.drain()
    await worker.chores()
    record = await records.read(redis, big["order_id"])
    assert record is not None and record.status == "queued"
    # nothing was taken for it
    assert (await _sku(engine))["available"] == 7
    # the list names buyers and their addresses: an operator's (API.md), not a viewer's
    resp = await engine.http.get("/admin/review", headers=auth(VIEWER_KEY))
    assert resp.status == 403 and (await resp.json())["code"] == "forbidden"
    listed = await _review_list(engine)
    assert [o["order_id"] for o in listed] == [big["order_id"]]
    level = await _sku(engine)  # /admin/skus names the line it waits in
    assert level["queued"] == 1 and level["waiting"] == {
        "sold_out": 0, "overflow": 0, "paused": 0, "review": 1}
    entry = listed[0]
    assert entry["qty"] == 4 and entry["buyer"] == "big" and entry["storefront"] == "shop-a"
    assert entry["buyer_ip"] == "192.0.2.7" and entry["queue"]["reason"] == "review"
    assert entry["queue"]["position"] == 1
    # a viewer may not decide
    status, problem = await _decide(engine, big["order_id"], "approve", key=VIEWER_KEY)
    assert status == 403 and problem["code"] == "forbidden"
    status, decided = await _decide(engine, big["order_id"], "approve")
    assert status == 200
    assert decided["order_id"] == big["order_id"] and decided["decision"] == "approve"
    await worker.drain()
    fulfilled = await _get(engine, big["order_id"])
    assert fulfilled["status"] == "fulfilled" and len(fulfilled["codes"]) == 4
    assert set(fulfilled["codes"]) <= set(codes("RV", 10))
    assert not set(fulfilled["codes"]) & set(small["codes"])
    sku = await _sku(engine)
    assert sku["available"] == 3 and sku["issued"] == 7
    assert await _review_list(engine) == []
    # deciding again: not in review any more
    for decision in ("approve", "reject"):
        status, problem = await _decide(engine, big["order_id"], decision)
        assert status == 409 and problem["code"] == "not_in_review"


async def test_reject_keeps_the_codes_in_stock(engine_factory: EngineFactory,
                                               redis: Redis) -> None:
    engine = await engine_factory(make_settings(skus=REVIEWED_SKUS), worker=False)
    worker = engine.stepped_worker()
    await engine.import_codes("card-100", codes("RJ", 5))
    status, big = await engine.order(qty=5, buyer="bulk")
    assert status == 202 and big["queue"]["reason"] == "review"
    status, decided = await _decide(engine, big["order_id"], "reject")
    assert status == 200 and decided["status"] == "rejected"
    body = await _get(engine, big["order_id"])
    assert body["status"] == "rejected" and body["reason"] == "review"
    assert not body.get("codes")
    sku = await _sku(engine)
    assert sku["available"] == 5 and sku["issued"] == 0 and sku["held"] == 0
    assert await _review_list(engine) == []
    # stays rejected: a whole round of the worker later, nothing picked it up
    await worker.drain()
    await worker.chores()
    record = await records.read(redis, big["order_id"])
    assert record is not None and record.status == "rejected"
    status, problem = await _decide(engine, big["order_id"], "reject")
    assert status == 409 and problem["code"] == "not_in_review"
    status, problem = await _decide(engine, big["order_id"], "approve")
    assert status == 409 and problem["code"] == "not_in_review"
    # the codes are there for the next buyer
    next_one = await _bought(engine, worker, qty=3, buyer="next")
    assert next_one["status"] == "fulfilled" and next_one["codes"] == codes("RJ", 3)


async def test_decisions_on_orders_not_in_review(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("NR", 1))
    status, problem = await _decide(engine, "o_0000ffffffffffffffff", "approve")
    assert status == 404 and problem["code"] == "not_found"
    status, problem = await _decide(engine, "not-an-order-id", "approve")
    assert status == 404 and problem["code"] == "not_found"
    _, fulfilled = await engine.order(buyer="nr")
    status, problem = await _decide(engine, fulfilled["order_id"], "reject")
    assert status == 409 and problem["code"] == "not_in_review"
    _, sold_out = await engine.order(buyer="nr2")  # queued, but for stock, not review
    assert sold_out["queue"]["reason"] == "sold_out"
    status, problem = await _decide(engine, sold_out["order_id"], "approve")
    assert status == 409 and problem["code"] == "not_in_review"
    status, problem = await _decide(engine, sold_out["order_id"], "maybe")
    assert status == 422 and problem["code"] == "invalid_request"


async def test_review_rules_by_buyer_pattern_and_ip_range(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(review={
        "buyers": ["watched@example.com"],
        "buyer_patterns": [r"reseller-\d+"],
        "ips": ["198.51.100.0/24", "2001:db8::/32"],
    }))
    await engine.import_codes("card-100", codes("RR", 10))
    reviewed = [
        {"buyer": "watched@example.com"},
        {"buyer": "reseller-42"},
        {"buyer": "reseller-7@shop"},  # matched from the start
        {"buyer": "plain", "buyer_ip": "198.51.100.200"},
        {"buyer": "plain6", "buyer_ip": "2001:db8::1"},
    ]
    passed = [
        {"buyer": "my-reseller-42"},  # not from the start
        {"buyer": "reseller-x"},
        {"buyer": "plain", "buyer_ip": "198.51.101.1"},
        {"buyer": "plain"},
    ]
    held = []
    for body in reviewed:
        status, order = await engine.order(**body)
        assert status == 202 and order["queue"]["reason"] == "review", body
        held.append(order["order_id"])
    for body in passed:
        status, order = await engine.order(**body)
        assert status == 201 and order["status"] == "fulfilled", body
    listed = [o["order_id"] for o in await _review_list(engine)]
    assert sorted(listed) == sorted(held)
    # review holds another storefront's orders too
    status, other = await engine.order(key=SHOP_B_KEY, buyer="reseller-1")
    assert status == 202 and other["queue"]["reason"] == "review"
    listed_b = [o for o in await _review_list(engine) if o["order_id"] == other["order_id"]]
    assert listed_b and listed_b[0]["storefront"] == "shop-b"
    status, _ = await _decide(engine, other["order_id"], "approve")
    assert status == 200
    await _status_is(redis, other["order_id"], "fulfilled")


async def test_block_list_answers_403_and_writes_nothing(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(blocklist={
        "buyers": ["fraud@example.com"], "ips": ["203.0.113.0/24", "192.0.2.9"]}))
    await engine.import_codes("card-100", codes("BL", 5))
    before = await _footprint(redis)
    for body in ({"buyer": "fraud@example.com"},
                 {"buyer": "fraud@example.com", "buyer_ip": "192.0.2.1"},
                 {"buyer": "someone", "buyer_ip": "203.0.113.77"},
                 {"buyer": "someone", "buyer_ip": "192.0.2.9"},
                 {"buyer": "someone", "buyer_ip": "192.0.2.9", "idempotency_key": "blk-1"}):
        status, problem = await engine.order(**body)
        assert status == 403 and problem["code"] == "blocked", body
        assert "order_id" not in problem
    # in a batch: that item is a problem, the others go on
    resp = await engine.http.post("/v1/orders/batch", json={"orders": [
        {"sku": "card-100", "qty": 1, "buyer": "fraud@example.com"}]},
        headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    [result] = (await resp.json())["results"]
    assert result["code"] == "blocked"
    assert await _footprint(redis) == before
    assert (await _sku(engine))["available"] == 5
    # not blocked: near misses
    for body in ({"buyer": "fraud@example.org"}, {"buyer": "someone", "buyer_ip": "192.0.2.10"},
                 {"buyer": "someone2", "buyer_ip": "203.0.114.1"}):
        status, order = await engine.order(**body)
        assert status == 201 and order["status"] == "fulfilled", body


async def test_block_list_change_applies_live(engine: Engine, redis: Redis) -> None:
    await engine.import_codes("card-100", codes("LV", 5))
    status, first = await engine.order(buyer="mallory", buyer_ip="203.0.113.5")
    assert status == 201
    doc = settings_dict(blocklist={"buyers": ["mallory"], "ips": ["203.0.113.0/24"]})
    # operators may not change the config
    resp = await engine.http.put("/admin/config", json=doc, headers=auth(OPERATOR_KEY))
    assert resp.status == 403
    resp = await engine.http.put("/admin/config", json=doc, headers=auth(ADMIN_KEY))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["changed"] is True

    async def blocked() -> bool:
        status, _ = await engine.order(buyer="mallory", wait_ms=0)
        return status == 403

    await eventually(blocked, timeout=3)
    status, problem = await engine.order(buyer="eve", buyer_ip="203.0.113.200")
    assert status == 403 and problem["code"] == "blocked"
    status, _ = await engine.order(buyer="alice")
    assert status == 201
    # lifted again
    resp = await engine.http.put("/admin/config", json=settings_dict(),
                                 headers=auth(ADMIN_KEY))
    assert resp.status == 200

    async def lifted() -> bool:
        status, _ = await engine.order(buyer="mallory", buyer_ip="203.0.113.5", wait_ms=0)
        return status != 403

    await eventually(lifted, timeout=3)
    # a bad block list is refused, naming the key, and the running one stays
    bad = settings_dict(blocklist={"buyers": [], "ips": ["not-an-address"]})
    resp = await engine.http.put("/admin/config", json=bad, headers=auth(ADMIN_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["code"] == "invalid_request"
    assert any(e["field"].startswith("blocklist") for e in problem["errors"]), problem
    status, _ = await engine.order(buyer="carol", buyer_ip="203.0.113.9")
    assert status == 201
    assert first["order_id"]


async def test_cancelled_while_in_review_leaves_the_review_list(
    engine_factory: EngineFactory,
) -> None:
    engine = await engine_factory(make_settings(skus=REVIEWED_SKUS))
    await engine.import_codes("card-100", codes("CX", 5))
    _, big = await engine.order(qty=4, buyer="cx")
    assert big["queue"]["reason"] == "review"
    resp = await engine.http.delete(f"/v1/orders/{big['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    assert await _review_list(engine) == []
    status, problem = await _decide(engine, big["order_id"], "approve")
    assert status == 409 and problem["code"] == "not_in_review"
    assert (await _sku(engine))["available"] == 5


async def test_order_placed_during_a_pause_still_needs_review(
    engine_factory: EngineFactory, redis: Redis,
) -> None:
    engine = await engine_factory(make_settings(skus=REVIEWED_SKUS))
    await engine.import_codes("card-100", codes("PR", 10))
    until = datetime.now(UTC) + timedelta(seconds=1)
    resp = await engine.http.post("/admin/pause", json={
        "scope": "sku:card-100",
        "until": until.isoformat(timespec="milliseconds").replace("+00:00", "Z")},
        headers=auth(OPERATOR_KEY))
    assert resp.status == 200
    status, big = await engine.order(qty=5, buyer="during-pause")
    assert status == 202 and big["queue"]["reason"] == "paused"

    async def decided_or_reviewed() -> bool:
        record = await records.read(redis, big["order_id"])
        return record is not None and (record.status != "queued" or record.reason == "review")

    await eventually(decided_or_reviewed, timeout=6)
    body = await _get(engine, big["order_id"])
    assert body["status"] == "queued" and body["queue"]["reason"] == "review", body
    assert (await _sku(engine))["available"] == 10
