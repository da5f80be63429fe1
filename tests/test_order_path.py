"""The core order path over HTTP on real Redis: fill, queue, reject, read, cancel, confirm."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.http.placing import _relay
from engine.store import keys
from engine.worker import book
from tests.conftest import SHOP_A_KEY, SHOP_B_KEY, STORES, Engine, auth, codes


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_order_is_fulfilled_with_imported_codes(engine: Engine) -> None:
    imported = codes("A", 5)
    result = await engine.import_codes("card-100", imported)
    assert result == {"sku": "card-100", "lot": "lot1", "added": 5, "duplicates": 0,
                      "invalid": 0, "available": 5}
    status, body = await engine.order(qty=2)
    assert status == 201, body
    assert body["status"] == "fulfilled"
    assert len(body["codes"]) == 2 and set(body["codes"]) <= set(imported)
    resp = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    again = await resp.json()
    assert resp.status == 200 and again["codes"] == body["codes"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_sold_out_order_is_queued_then_served_on_restock(engine: Engine) -> None:
    status, body = await engine.order()
    assert status == 202 and body["status"] == "queued"
    assert body["queue"]["reason"] == "sold_out" and body["queue"]["position"] == 1
    # an absolute link under server.public_url, for the storefront to hand on
    assert body["queue"]["page"].startswith(f"http://127.0.0.1:8080/q/{body['order_id']}?t=")
    await engine.import_codes("card-100", ["ONLY-ONE"])
    for _ in range(100):
        resp = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
        found = await resp.json()
        if found["status"] == "fulfilled":
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert found["status"] == "fulfilled" and found["codes"] == ["ONLY-ONE"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_reject_policy_answers_409_sold_out(engine: Engine) -> None:
    status, body = await engine.order(sku="card-reject")
    assert status == 409 and body["code"] == "sold_out" and body["order_id"].startswith("o_")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_buyer_limit_answers_409_limit_exceeded(engine: Engine) -> None:
    await engine.import_codes("card-limited", codes("L", 10))
    status, _ = await engine.order(sku="card-limited", qty=3, buyer="x")
    assert status == 201
    status, body = await engine.order(sku="card-limited", qty=1, buyer="x")
    assert status == 409 and body["code"] == "limit_exceeded"
    status, _ = await engine.order(sku="card-limited", qty=1, buyer="y")
    assert status == 201


async def test_purchases_counted_before_the_buckets_still_limit_a_buyer(engine: Engine,
                                                                       redis: Redis) -> None:
    """A SKU's purchases were once one hash: its counts still hold after an upgrade."""
    shard = keys.shard_of_sku("card-limited", engine.settings.redis.shards)
    await redis.hset(keys.bought_unbucketed("card-limited", shard), "x", 2)
    await engine.import_codes("card-limited", codes("L", 10))
    status, body = await engine.order(sku="card-limited", qty=2, buyer="x")  # 2 + 2 > 3
    assert status == 409 and body["code"] == "limit_exceeded", body
    status, _ = await engine.order(sku="card-limited", qty=1, buyer="x")
    assert status == 201
    assert (await book.purchases(redis, "card-limited", shard))["x"] == 3


async def test_many_buyers_purchases_stay_in_small_hashes(engine: Engine, redis: Redis) -> None:
    """Each buyer's count lands in one of the SKU's bucket hashes, small enough to stay a
    listpack (what keeps a decided order's memory down), and cancelling gives it back."""
    await engine.import_codes("card-limited", codes("M", 300))
    buyers = [f"buyer-{i}" for i in range(300)]
    answers = await asyncio.gather(*(engine.order(sku="card-limited", qty=1, buyer=b)
                                     for b in buyers))
    assert all(status == 201 for status, _ in answers), answers[:3]
    shard = keys.shard_of_sku("card-limited", engine.settings.redis.shards)
    assert await book.purchases(redis, "card-limited", shard) == dict.fromkeys(buyers, 1)
    buckets = {keys.bought("card-limited", shard, b) for b in buyers}
    assert len(buckets) > 100
    for key in buckets:
        assert await redis.object("encoding", key) in (b"ziplist", b"listpack")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_storefront_isolation(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("I", 2))
    status, body = await engine.order(key=SHOP_A_KEY)
    assert status == 201
    path = f"/v1/orders/{body['order_id']}"
    resp = await engine.http.get(path, headers=auth(SHOP_B_KEY))
    foreign = await resp.json()
    resp2 = await engine.http.get("/v1/orders/o_0000ffffffffffffffff", headers=auth(SHOP_B_KEY))
    unknown = await resp2.json()
    assert resp.status == resp2.status == 404
    assert foreign["code"] == unknown["code"] == "not_found"
    resp = await engine.http.delete(path, headers=auth(SHOP_B_KEY))
    assert resp.status == 404


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_idempotency_replay_and_conflict(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("K", 3))
    status, first = await engine.order(idempotency_key="k-1", qty=1)
    assert status == 201
    status, again = await engine.order(idempotency_key="k-1", qty=1)
    assert status == 200 and again["order_id"] == first["order_id"]
    assert again["codes"] == first["codes"]
    status, conflict = await engine.order(idempotency_key="k-1", qty=2)
    assert status == 409 and conflict["code"] == "idempotency_conflict"
    assert conflict["order_id"] == first["order_id"]
    # the same key from another storefront is another key
    status, other = await engine.order(key=SHOP_B_KEY, idempotency_key="k-1", qty=1)
    assert status == 201 and other["order_id"] != first["order_id"]
    levels = await (await engine.http.get("/admin/skus/card-100",
                                          headers=auth("key-viewer"))).json()
    assert levels["issued"] == 2


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_replay_marks_only_its_own_answer_replayed(engine: Engine) -> None:
    """With no rate limit every answer shares one RateLimit header mapping: a replay once
    wrote Idempotent-Replayed into it, and every later answer of the process said so."""
    await engine.import_codes("card-100", codes("R", 3))
    body = {"sku": "card-100", "qty": 1, "buyer": "b1"}
    headers = {**auth(SHOP_A_KEY), "Idempotency-Key": "once"}
    await engine.http.post("/v1/orders", json=body, headers=headers)
    replay = await engine.http.post("/v1/orders", json=body, headers=headers)
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"
    fresh = await engine.http.post("/v1/orders", json=body, headers=auth(SHOP_A_KEY))
    assert fresh.status == 201 and "Idempotent-Replayed" not in fresh.headers
    grant = await engine.http.get("/v1/orders/o_00000000000000000000", headers=auth(SHOP_A_KEY))
    assert "Idempotent-Replayed" not in grant.headers


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_cancel_queued_order(engine: Engine) -> None:
    status, body = await engine.order()
    assert status == 202
    resp = await engine.http.delete(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    cancelled = await resp.json()
    assert resp.status == 200 and cancelled["status"] == "cancelled"
    await engine.import_codes("card-100", ["C-1"])
    status, later = await engine.order()
    assert status == 201 and later["codes"] == ["C-1"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_cancel_fulfilled_is_not_cancellable(engine: Engine) -> None:
    await engine.import_codes("card-100", ["F-1"])
    _, body = await engine.order()
    resp = await engine.http.delete(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    problem = await resp.json()
    assert resp.status == 409 and problem["code"] == "not_cancellable"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_hold_confirm_and_cancel_return_codes(engine: Engine) -> None:
    await engine.import_codes("card-100", ["H-1", "H-2"])
    status, held = await engine.order(hold_s=60)
    assert status == 201 and held["status"] == "held" and "codes" not in held
    assert held["hold_expires_at"]
    resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    confirmed = await resp.json()
    assert resp.status == 200 and confirmed["status"] == "fulfilled"
    assert confirmed["codes"] == ["H-1"]
    _, held2 = await engine.order(hold_s=60)
    resp = await engine.http.delete(f"/v1/orders/{held2['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    resp = await engine.http.post(f"/v1/orders/{held2['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 409 and (await resp.json())["code"] == "not_held"
    status, last = await engine.order()
    assert status == 201 and last["codes"] == ["H-2"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_wait_zero_answers_pending_at_once(engine: Engine) -> None:
    await engine.import_codes("card-100", ["P-1"])
    status, body = await engine.order(wait_ms=0)
    assert status == 202 and body["status"] == "pending"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_batch_route(engine: Engine) -> None:
    await engine.import_codes("card-100", codes("B", 3))
    orders = [{"sku": "card-100", "qty": 1, "buyer": f"b{i}"} for i in range(4)]
    orders.append({"sku": "nope", "qty": 1, "buyer": "z"})
    resp = await engine.http.post("/v1/orders/batch", json={"orders": orders},
                                  headers=auth(SHOP_A_KEY))
    results = (await resp.json())["results"]
    assert resp.status == 200 and len(results) == 5
    assert [r["status"] for r in results[:4]] == ["fulfilled"] * 3 + ["queued"]
    assert results[4]["code"] == "unknown_sku"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_batch_keeps_request_order_across_keys_and_waits(engine: Engine) -> None:
    """Orders with and without an Idempotency-Key in one batch: each answer in its place, a
    key seen before replays its order, and wait_ms 0 answers pending at once."""
    await engine.import_codes("card-100", codes("K", 6))
    status, first = await engine.order(buyer="k0", idempotency_key="batch-key-0")
    assert status == 201
    items = [
        {"sku": "card-100", "qty": 1, "buyer": "k0", "idempotency_key": "batch-key-0"},
        {"sku": "card-100", "qty": 1, "buyer": "u1"},
        {"sku": "card-100", "qty": 2, "buyer": "k2", "idempotency_key": "batch-key-2"},
        {"sku": "card-100", "qty": 1, "buyer": "u3"},
    ]
    resp = await engine.http.post("/v1/orders/batch", json={"orders": items},
                                  headers=auth(SHOP_A_KEY))
    results = (await resp.json())["results"]
    assert resp.status == 200
    assert results[0]["order_id"] == first["order_id"] and results[0]["codes"] == first["codes"]
    assert [r["buyer"] for r in results] == ["k0", "u1", "k2", "u3"]
    assert [len(r["codes"]) for r in results] == [1, 1, 2, 1]
    issued = [c for r in results[1:] for c in r["codes"]] + first["codes"]
    assert len(set(issued)) == 5
    resp = await engine.http.post(
        "/v1/orders/batch", headers=auth(SHOP_A_KEY),
        json={"orders": [{"sku": "card-100", "qty": 1, "buyer": "w", "wait_ms": 0}] * 2})
    later = (await resp.json())["results"]
    assert [r["status"] for r in later] == ["pending", "pending"]
    assert later[0]["order_id"] != later[1]["order_id"]


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_duplicate_codes_are_never_added_again(engine: Engine) -> None:
    first = await engine.import_codes("card-100", ["D-1", "D-2", "D-2"])
    assert first["added"] == 2 and first["duplicates"] == 1
    await engine.order()
    again = await engine.import_codes("card-100", ["D-1", "D-2", "D-3"], lot="lot2")
    assert again["added"] == 1 and again["duplicates"] == 2


async def test_a_failed_admission_nobody_waits_for_is_not_reported_unretrieved() -> None:
    """Under overload a wait can end before its admission fails: the failure is read anyway,
    so asyncio never logs "Future exception was never retrieved" (thousands a second)."""
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        waiter: asyncio.Future[Any] = loop.create_future()
        waiter.set_result(None)  # the wait ran out first
        admitted: asyncio.Future[Any] = loop.create_future()
        admitted.set_exception(ConnectionError("redis timed out"))
        _relay(waiter, None, None, admitted)  # type: ignore[arg-type]
        del admitted
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(None)
    assert not reported, reported
