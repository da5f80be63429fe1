"""Orders with coupons: checked and priced at the door, reserved with the order, redeemed when
it is fulfilled, released when it ends otherwise (K1: a coupon serves one order, ever; K3: a
decided order holds no reserved coupon)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.store import wallet_keys
from engine.wallet import coupons
from engine.wallet.coupon_reconcile import reconcile_coupons
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
    settings_dict,
)
from tests.test_coupons import issue, listed
from tests.test_points import POINTS, assert_p1, move

TEMPLATES = [
    {"id": "five-off", "kind": "amount", "amount": 500, "per_buyer": 0},
    {"id": "ten-pct", "kind": "percent", "percent": 10, "max_discount": 150, "per_buyer": 0,
     "category": "percent"},
    {"id": "big-spender", "kind": "threshold", "amount": 800, "min_spend": 3000,
     "per_buyer": 0, "category": "threshold"},
    {"id": "alone", "kind": "amount", "amount": 100, "stackable": False, "per_buyer": 0,
     "category": "solo"},
    {"id": "other-sku", "kind": "amount", "amount": 100, "skus": ["card-free"],
     "per_buyer": 0, "category": "elsewhere"},
]
PRICED = [{"id": "card-100", "max_qty": 10, "price": 1000}, {"id": "card-free"}]


async def coupon_engine(engine_factory: EngineFactory, stock: int = 20,
                        skus: list[dict[str, Any]] = PRICED) -> Engine:
    raw = settings_dict(skus=skus, coupon_templates=TEMPLATES, points=POINTS)
    engine = await engine_factory(make_settings(**raw))
    if stock:
        await engine.import_codes("card-100", codes("CPN", stock))
    return engine


async def code_of(engine: Engine, buyer: str, template: str) -> str:
    status, coupon = await issue(engine, buyer, template)
    assert status == 201, coupon
    return str(coupon["code"])


async def status_of(engine: Engine, buyer: str, code: str) -> str:
    [found] = [c for c in await listed(engine, buyer) if c["code"] == code]
    return str(found["status"])


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_coupon_takes_its_amount_off_and_is_redeemed_when_paid(
        engine_factory: EngineFactory) -> None:
    engine = await coupon_engine(engine_factory)
    code = await code_of(engine, "ann", "five-off")
    status, held = await engine.order(buyer="ann", coupons=[code])
    assert status == 201 and held["status"] == "held", held
    assert held["price"] == {"currency": "CNY", "amount": 1000, "discount": 500, "points": 0,
                             "points_value": 0, "cash_due": 500}
    assert await status_of(engine, "ann", code) == "reserved"
    resp = await engine.http.post(f"/v1/orders/{held['order_id']}/confirm",
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    await eventually(lambda: _status_is(engine, "ann", code, "redeemed"))
    status, again = await engine.order(buyer="ann", coupons=[code])  # K1: once, ever
    assert status == 409 and again["code"] == "coupon_invalid", again
    assert again["errors"] == [{"field": "coupons[0]", "message": "the coupon is redeemed"}]


async def _status_is(engine: Engine, buyer: str, code: str, status: str) -> bool:
    return await status_of(engine, buyer, code) == status


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_coupons_and_points_pay_together_in_the_order_given(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await coupon_engine(engine_factory)
    await move(engine, "mixer", 5000)
    big = await code_of(engine, "mixer", "big-spender")
    pct = await code_of(engine, "mixer", "ten-pct")
    # 3 cards: 3000; threshold 800 off -> 2200; 10 % of that, capped at 150 -> 2050
    status, paid = await engine.order(buyer="mixer", qty=3, coupons=[big, pct], points=2050)
    assert status == 201 and paid["status"] == "fulfilled", paid
    assert paid["price"] == {"currency": "CNY", "amount": 3000, "discount": 950,
                             "points": 2050, "points_value": 2050, "cash_due": 0}
    await eventually(lambda: _status_is(engine, "mixer", big, "redeemed"))
    assert await status_of(engine, "mixer", pct) == "redeemed"
    await assert_p1(redis, "shop-a", "mixer")
    status, problem = await engine.order(buyer="mixer", coupons=[await code_of(
        engine, "mixer", "five-off")], points=600)
    assert status == 422 and "points" in str(problem), problem  # only 500 left to pay


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_coupons_that_may_not_be_used_are_409_each_named_and_nothing_is_written(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await coupon_engine(engine_factory)
    five = await code_of(engine, "bea", "five-off")
    five_again = await code_of(engine, "bea", "five-off")
    alone = await code_of(engine, "bea", "alone")
    big = await code_of(engine, "bea", "big-spender")
    elsewhere = await code_of(engine, "bea", "other-sku")
    theirs = await code_of(engine, "someone-else", "five-off")
    status, problem = await engine.order(buyer="bea", coupons=[
        five, five_again, big, elsewhere, theirs, five, alone])
    assert status == 422, problem  # over max_per_order (3): the list itself
    status, problem = await engine.order(buyer="bea", coupons=[five, five_again, big])
    assert status == 409 and problem["code"] == "coupon_invalid", problem
    assert problem["errors"] == [
        {"field": "coupons[1]", "message": "another coupon of category 'discount' is in "
                                           "the order"},
        {"field": "coupons[2]", "message": "the coupon needs an order of at least 3000"}]
    status, problem = await engine.order(buyer="bea", coupons=[elsewhere, theirs, alone])
    assert [e["message"] for e in problem["errors"]] == [
        "the coupon does not apply to card-100", "no such coupon for this buyer",
        "the coupon is not stackable: it stands alone in an order"]
    assert {c["status"] for c in await listed(engine, "bea")} == {"active"}
    assert await redis.zcard(wallet_keys.open_reservations(
        wallet_keys.shard_of_wallet("shop-a", "bea", 4))) == 0
    status, problem = await engine.order(buyer="bea", sku="card-free", coupons=[five])
    assert status == 422 and problem["code"] == "not_priced", problem


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_cancelled_order_gives_its_coupon_back(engine_factory: EngineFactory) -> None:
    engine = await coupon_engine(engine_factory)
    code = await code_of(engine, "cal", "five-off")
    _, held = await engine.order(buyer="cal", coupons=[code])
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    await eventually(lambda: _status_is(engine, "cal", code, "active"))
    status, again = await engine.order(buyer="cal", coupons=[code])
    assert status == 201 and again["price"]["discount"] == 500, again


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_one_coupon_in_fifty_concurrent_orders_serves_exactly_one(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """K1 under concurrency: the reservation is atomic; every other order is 409."""
    engine = await coupon_engine(engine_factory)
    code = await code_of(engine, "dee", "five-off")
    answers = await asyncio.gather(*(engine.order(buyer="dee", coupons=[code])
                                     for _ in range(50)))
    placed = [a for s, a in answers if s in (201, 202)]
    assert len(placed) == 1, [s for s, _ in answers]
    assert all(s == 409 and a["code"] == "coupon_invalid" for s, a in answers
               if a is not placed[0])


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_a_queued_order_keeps_its_coupon_until_it_expires(
        engine_factory: EngineFactory) -> None:
    engine = await coupon_engine(engine_factory, stock=0, skus=[
        {"id": "card-100", "price": 1000, "queue_ttl_s": 1}, {"id": "card-free"}])
    code = await code_of(engine, "eve", "five-off")
    status, queued = await engine.order(buyer="eve", coupons=[code], wait_ms=3000)
    assert status == 202 and queued["status"] == "queued", queued
    assert await status_of(engine, "eve", code) == "reserved"
    await eventually(lambda: _status_is(engine, "eve", code, "active"), timeout=15)
    resp = await engine.http.get(f"/v1/orders/{queued['order_id']}", headers=auth(SHOP_A_KEY))
    assert (await resp.json())["status"] == "expired"


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_reconcile_checks_k1_to_k3(engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await coupon_engine(engine_factory)
    paid = await code_of(engine, "kim", "five-off")
    waiting = await code_of(engine, "kim", "five-off")
    _, fulfilled = await engine.order(buyer="kim", coupons=[paid])
    await engine.http.post(f"/v1/orders/{fulfilled['order_id']}/confirm",
                           headers=auth(SHOP_A_KEY))
    _, held = await engine.order(buyer="kim", coupons=[waiting])
    await eventually(lambda: _status_is(engine, "kim", paid, "redeemed"))
    report = await reconcile_coupons(redis, engine.settings)
    assert report.ok and report.coupons == 2, report.violations
    shard = wallet_keys.shard_of_wallet("shop-a", "kim", 4)
    # what a broken engine would leave behind, one promise at a time
    await redis.hset(wallet_keys.coupon(coupons.coupon_id(paid), shard), "st", "active")
    await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    await eventually(lambda: _status_is(engine, "kim", waiting, "active"))
    await redis.hset(wallet_keys.coupon(coupons.coupon_id(waiting), shard),
                     mapping={"st": "reserved", "o": held["order_id"]})
    await redis.set(wallet_keys.template_issued("five-off"), 1)
    violations = (await reconcile_coupons(redis, engine.settings)).violations
    assert any(v.startswith("K1 order") for v in violations), violations
    assert any(v.startswith("K3 coupon") for v in violations), violations


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_coupon_redemptions_are_limited_per_address(engine_factory: EngineFactory
                                                           ) -> None:
    raw = settings_dict(skus=PRICED, coupon_templates=TEMPLATES, points=POINTS,
                        coupons={"redemptions_per_ip_per_hour": 2})
    engine = await engine_factory(make_settings(**raw))
    await engine.import_codes("card-100", codes("IP", 5))
    answers = []
    for buyer in ("ip-1", "ip-2", "ip-3"):
        code = await code_of(engine, buyer, "five-off")
        answers.append(await engine.order(buyer=buyer, coupons=[code], buyer_ip="203.0.113.9"))
    assert [s for s, _ in answers] == [201, 201, 429], answers
    assert answers[2][1]["code"] == "rate_limited"
    assert {c["status"] for c in await listed(engine, "ip-3")} == {"active"}
    code = await code_of(engine, "ip-4", "five-off")
    status, _ = await engine.order(buyer="ip-4", coupons=[code], buyer_ip="203.0.113.10")
    assert status == 201


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_review_rules_hold_a_coupon_order_like_any_other(engine_factory: EngineFactory
                                                                ) -> None:
    engine = await coupon_engine(engine_factory, skus=[
        {"id": "card-100", "max_qty": 10, "price": 1000, "review_over_qty": 1},
        {"id": "card-free"}])
    code = await code_of(engine, "rev", "five-off")
    status, waiting = await engine.order(buyer="rev", qty=2, coupons=[code])
    assert status == 202 and waiting["queue"]["reason"] == "review", waiting
    assert await status_of(engine, "rev", code) == "reserved"
    resp = await engine.http.post(f"/admin/review/{waiting['order_id']}",
                                  json={"decision": "reject"}, headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()
    await eventually(lambda: _status_is(engine, "rev", code, "active"))


@pytest.mark.parametrize("store", STORES, indirect=True)
async def test_batch_items_carry_their_own_coupons(engine_factory: EngineFactory) -> None:
    engine = await coupon_engine(engine_factory)
    good = await code_of(engine, "bat", "five-off")
    theirs = await code_of(engine, "someone", "five-off")
    resp = await engine.http.post("/v1/orders/batch", json={"orders": [
        {"sku": "card-100", "qty": 1, "buyer": "bat", "coupons": [good]},
        {"sku": "card-100", "qty": 1, "buyer": "bat", "coupons": [theirs]},
        {"sku": "card-100", "qty": 1, "buyer": "bat"}]}, headers=auth(SHOP_A_KEY))
    results = (await resp.json())["results"]
    assert results[0]["status"] == "held" and results[0]["price"]["discount"] == 500
    assert results[1]["code"] == "coupon_invalid"  # its problem alone
    assert results[2]["status"] == "held" and results[2]["price"]["discount"] == 0
