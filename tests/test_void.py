"""Voiding a lot (a supplier recall): its codes never go on sale again, held ones included,
and its lot id cannot be imported into again."""

from __future__ import annotations

from redis.asyncio import Redis

from engine.stock import lots
from tests.conftest import OPERATOR_KEY, SHOP_A_KEY, Engine, auth


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
