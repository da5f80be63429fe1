"""Orders that cost money and points: the price block, held until payment, paid with points
reserved at admission and spent on fulfilment or given back (P2), exactly N of many concurrent
orders against a wallet that pays for N (P3), replays that move points once (P4)."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from engine.store import wallet_keys
from engine.wallet import ledger
from engine.wallet.reconcile import reconcile_points
from tests.conftest import (
    SHOP_A_KEY,
    STORES,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    post_many,
)
from tests.test_points import assert_p1, move, points_settings, wallet_of


async def order(engine: Engine, **body: Any) -> tuple[int, dict[str, Any]]:
    return await engine.order(**{"buyer": "alice", **body})


async def settled(redis: Redis, storefront: str, buyer: str) -> None:
    """Wait until no points of the buyer are reserved any more."""
    async def nothing_reserved() -> bool:
        return (await ledger.counters(redis, 4, storefront, buyer)).get("reserved", 0) == 0

    await eventually(nothing_reserved, what="the reservation settled")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_priced_order_shows_its_price_and_waits_for_payment(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("PRC", 2))
    status, held = await order(engine, qty=2)
    assert status == 201 and held["status"] == "held", held
    assert held["price"] == {"currency": "CNY", "amount": 2000, "discount": 0, "points": 0,
                             "points_value": 0, "cash_due": 2000}
    assert held["hold_expires_at"] and "codes" not in held
    resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    paid = await resp.json()
    assert resp.status == 200 and paid["status"] == "fulfilled" and len(paid["codes"]) == 2
    # 20.00 CNY paid in cash earns 20 points (earn_per_unit 1), once
    async def earned() -> bool:
        return (await wallet_of(engine, "alice"))["balance"] == 20

    await eventually(earned, what="the earned points")
    await assert_p1(redis, "shop-a", "alice")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_an_unpriced_sku_is_as_before(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-free", codes("FREE", 1))
    status, body = await order(engine, sku="card-free")
    assert status == 201 and body["status"] == "fulfilled" and "price" not in body
    status, problem = await order(engine, sku="card-free", points=10)
    assert status == 422 and problem["code"] == "not_priced"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_an_order_paid_in_full_with_points_is_fulfilled_at_once(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("PTS", 1))
    await move(engine, "alice", 1500)
    status, body = await order(engine, points=1000)
    assert status == 201 and body["status"] == "fulfilled", body
    assert body["price"]["points_value"] == 1000 and body["price"]["cash_due"] == 0
    await settled(redis, "shop-a", "alice")
    wallet = await wallet_of(engine, "alice")
    assert wallet["balance"] == 500 and wallet["reserved"] == 0  # nothing earned: no cash
    counts = await ledger.counters(redis, 4, "shop-a", "alice")
    assert counts["spent"] == 1000
    await assert_p1(redis, "shop-a", "alice")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_points_of_a_cancelled_order_go_back_to_their_lots(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("CXL", 1))
    await move(engine, "alice", 300, expires_at="2031-01-01T00:00:00Z")
    await move(engine, "alice", 300, expires_at="2099-01-01T00:00:00Z")
    status, held = await order(engine, points=400)  # 6.00 still due: held
    assert status == 201 and held["status"] == "held" and held["price"]["cash_due"] == 600
    assert (await wallet_of(engine, "alice"))["reserved"] == 400
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    await settled(redis, "shop-a", "alice")
    wallet = await wallet_of(engine, "alice")
    assert wallet["balance"] == 600
    assert sorted((lot["points"], lot["expires_at"][:4]) for lot in wallet["lots"]) == \
        [(300, "2031"), (300, "2099")]
    await assert_p1(redis, "shop-a", "alice")
    report = await reconcile_points(redis, 4)
    assert report.ok and report.orders_checked == 1, report.violations


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_short_wallet_is_409_and_nothing_is_written(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("SHORT", 1))
    await move(engine, "alice", 99)
    status, problem = await order(engine, points=100)
    assert status == 409 and problem["code"] == "insufficient_points", problem
    assert await redis.keys("kg:{s*}:o:*") == []
    wallet = await wallet_of(engine, "alice")
    assert (wallet["balance"], wallet["reserved"]) == (99, 0)


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_bad_points_in_an_order_are_422(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(points_settings(points={"max_redeem_percent": 50}))
    await move(engine, "alice", 5000)
    for body, field in (({"points": 600}, "points"),  # over 50 % of 10.00
                        ({"points": -1}, "points"),
                        ({"points": 10**13}, "points"),
                        ({"points": 10, "buyer": "a b"}, "buyer")):
        status, problem = await order(engine, **body)
        assert status == 422 and problem["errors"][0]["field"] == field, (body, problem)


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_queued_order_keeps_its_points_until_it_is_served(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await move(engine, "alice", 1000)
    status, queued = await order(engine, points=1000, wait_ms=500)
    assert status == 202 and queued["status"] == "queued"
    assert (await wallet_of(engine, "alice"))["reserved"] == 1000
    await engine.import_codes("card-100", codes("LATE", 1))

    async def served() -> bool:
        resp = await engine.http.get(f"/v1/orders/{queued['order_id']}",
                                     headers=auth(SHOP_A_KEY))
        return bool((await resp.json())["status"] == "fulfilled")

    await eventually(served, what="the queued order served")
    await settled(redis, "shop-a", "alice")
    assert (await ledger.counters(redis, 4, "shop-a", "alice"))["spent"] == 1000
    await assert_p1(redis, "shop-a", "alice")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_queued_order_with_cash_due_is_held_for_payment_when_served(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """A ticket served from the line waits for payment like a new order: never its codes
    before the storefront confirms."""
    engine = await engine_factory(points_settings())
    await move(engine, "alice", 300)
    status, queued = await order(engine, points=300, wait_ms=300)  # 7.00 still due in cash
    assert status == 202 and queued["price"]["cash_due"] == 700
    await engine.import_codes("card-100", codes("DUE", 1))

    async def state() -> dict[str, Any]:
        resp = await engine.http.get(f"/v1/orders/{queued['order_id']}",
                                     headers=auth(SHOP_A_KEY))
        body: dict[str, Any] = await resp.json()
        return body

    async def held() -> bool:
        return (await state())["status"] == "held"

    await eventually(held, what="the served ticket held")
    assert "codes" not in await state()
    assert (await wallet_of(engine, "alice"))["reserved"] == 300  # kept until paid
    resp = await engine.http.post(f"/v1/orders/{queued['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 200 and (await resp.json())["codes"] == ["DUE-000000"]
    await settled(redis, "shop-a", "alice")
    await assert_p1(redis, "shop-a", "alice")


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_replayed_order_moves_its_points_once(engine_factory: EngineFactory,
                                                     redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("REPLAY", 3))
    await move(engine, "alice", 3000)
    answers = [await order(engine, points=1000, idempotency_key="pay-once") for _ in range(3)]
    assert [s for s, _ in answers] == [201, 200, 200]
    assert len({b["order_id"] for _, b in answers}) == 1
    await settled(redis, "shop-a", "alice")
    counts = await ledger.counters(redis, 4, "shop-a", "alice")
    assert (counts["spent"], counts["balance"]) == (1000, 2000)
    assert (await reconcile_points(redis, 4)).ok


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_thousand_concurrent_orders_against_a_wallet_that_pays_for_fifty(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """P3: each order is paid in full with 1,000 points; the wallet holds 50,000. Exactly 50
    are fulfilled, the other 950 answer 409 insufficient_points; nothing is over-reserved."""
    engine = await engine_factory(points_settings(points={"grants_per_minute": 0}))
    await engine.import_codes("card-100", codes("HOT", 1000))
    assert (await move(engine, "hot", 50_000))[0] == 201
    base = str(engine.http.make_url("")).rstrip("/")
    answers = await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": "hot",
                                      "points": 1000} for _ in range(1000)], limit=200)
    statuses = [s for s, _ in answers]
    assert statuses.count(201) == 50 and statuses.count(409) == 950, \
        {s: statuses.count(s) for s in set(statuses)}
    assert all(b["code"] == "insufficient_points" for s, b in answers if s == 409)
    await settled(redis, "shop-a", "hot")
    counts = await ledger.counters(redis, 4, "shop-a", "hot")
    assert (counts["balance"], counts["reserved"], counts["spent"]) == (0, 0, 50_000)
    level = await (await engine.http.get("/admin/skus/card-100",
                                         headers={"Authorization": "Bearer key-viewer"})).json()
    assert level["issued"] == 50
    await assert_p1(redis, "shop-a", "hot")
    report = await reconcile_points(redis, 4)
    assert report.ok and report.orders_checked == 50, report.violations
    assert not await redis.zcard(wallet_keys.open_reservations(
        wallet_keys.shard_of_wallet("shop-a", "hot", 4)))


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_reconcile_finds_points_that_do_not_add_up(engine_factory: EngineFactory,
                                                         redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", codes("RECON", 1))
    await move(engine, "alice", 2000)
    status, held = await order(engine, points=500)
    assert status == 201
    assert (await reconcile_points(redis, 4)).ok
    shard, w = ledger.wallet_keys("shop-a", "alice", 4)
    await redis.hincrby(w.counts, "balance", 7)  # points out of nowhere
    await redis.hset(w.reservations, held["order_id"], "S|1:500")  # spent, yet only held
    report = await reconcile_points(redis, 4)
    assert any(v.startswith("P1 ") and "granted - deducted" in v for v in report.violations)
    assert any(v.startswith("P2 ") and held["order_id"] in v for v in report.violations)
    assert "alice" not in " ".join(report.violations)  # buyer ids stay out of reports
    del shard
