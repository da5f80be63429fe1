"""Voiding a lot (a supplier recall): its codes never go on sale again, held ones included,
and its lot id cannot be imported into again; a held order confirmed after a recall gets
other codes, or is cancelled (reason recalled) with its points refunded."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.stock import lots
from engine.stock.reconcile import reconcile
from engine.store import keys
from tests.conftest import OPERATOR_KEY, SHOP_A_KEY, Engine, EngineFactory, auth, eventually
from tests.test_points import assert_p1, move, points_settings, wallet_of


async def test_held_codes_of_a_voided_lot_are_voided_when_the_hold_ends(
        engine: Engine, redis: Redis) -> None:
    await engine.import_codes("card-100", ["VV-1", "VV-2"])
    status, held = await engine.order(qty=1, hold_s=60)
    assert status == 201 and held["status"] == "held"
    resp = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "lot1"},
                                    headers=auth(OPERATOR_KEY))
    assert (await resp.json())["voided"] == 1
    again = await engine.http.post("/admin/skus/card-100/stock", params={"lot": "lot1"},
                                   data="VV-3", headers={**auth(OPERATOR_KEY),
                                                         "Content-Type": "text/plain"})
    assert again.status == 409 and (await again.json())["code"] == "lot_voided"
    resp = await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    [level] = await lots.levels(redis, 4, ["card-100"])
    assert (level.available, level.held, level.voided) == (0, 0, 2)
    status, _ = await engine.order(qty=1, buyer="next", wait_ms=500)
    assert status == 202  # nothing on sale: the recalled codes stay out


async def _void(engine: Engine, lot: str) -> None:
    resp = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": lot},
                                    headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()


async def _confirm(engine: Engine, order_id: str) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.post(f"/v1/orders/{order_id}/confirm", headers=auth(SHOP_A_KEY))
    return resp.status, await resp.json()


async def test_recalled_held_codes_are_swapped_for_others_on_confirm(
        engine: Engine, redis: Redis) -> None:
    """The buyer paid for codes that were recalled meanwhile: the recalled ones are voided and
    the order gets as many from the SKU's other lots, in the matching order."""
    await engine.import_codes("card-100", ["SW-1", "SW-2"], lot="a-first")
    await engine.import_codes("card-100", ["SW-3"], lot="b-second")
    await engine.import_codes("card-100", ["SW-4", "SW-5"], lot="c-third")
    status, held = await engine.order(qty=2, hold_s=60)  # both codes of a-first
    assert status == 201 and held["status"] == "held"
    await _void(engine, "a-first")
    status, paid = await _confirm(engine, held["order_id"])
    assert status == 200 and paid["status"] == "fulfilled", paid
    assert paid["codes"] == ["SW-3", "SW-4"]  # b-second first, then the front of c-third
    [level] = await lots.levels(redis, 4, ["card-100"])
    assert (level.available, level.held, level.issued, level.voided) == (1, 0, 2, 2)
    report = await reconcile(redis, 4, ["card-100"])
    assert report.ok, report.violations
    shard = keys.shard_of_sku("card-100", 4)
    audit = [f[b"e"].decode() for _, f in await redis.xrange(keys.issued(shard))]
    assert audit[-1] == f"{held['order_id']} card-100 fulfilled b-second:1,c-third:1"
    status, again = await _confirm(engine, held["order_id"])  # once fulfilled: as before
    assert status == 409 and again["code"] == "not_held"


async def test_recalled_held_codes_with_nothing_to_replace_them_cancel_the_order(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(points_settings())
    await engine.import_codes("card-100", ["RC-1", "RC-2"], lot="only")
    await move(engine, "alice", 400)
    status, held = await engine.order(buyer="alice", qty=1, points=400)  # 6.00 cash due
    assert status == 201 and held["status"] == "held", held
    await _void(engine, "only")
    status, problem = await _confirm(engine, held["order_id"])
    assert status == 409 and problem["code"] == "recalled", problem
    assert problem["order_id"] == held["order_id"]
    resp = await engine.http.get(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    ended = await resp.json()
    assert (ended["status"], ended["reason"]) == ("cancelled", "recalled")
    assert "codes" not in ended
    [level] = await lots.levels(redis, 4, ["card-100"])
    assert (level.available, level.held, level.issued, level.voided) == (0, 0, 0, 2)

    async def refunded() -> bool:
        wallet = await wallet_of(engine, "alice")
        return bool(wallet["balance"] == 400 and wallet["reserved"] == 0)

    await eventually(refunded, what="the points refunded")
    await assert_p1(redis, "shop-a", "alice")
