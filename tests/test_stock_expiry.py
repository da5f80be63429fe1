"""Stock that expires: the unsold codes of a lot past its expiry leave `available` for
`expired` (C1: imported = available + held + issued + voided + expired), held ones when their
hold ends; reconcile, /admin/skus and /metrics say so."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from engine.stock import lots
from engine.stock.reconcile import reconcile
from engine.store import keys
from tests.conftest import OPERATOR_KEY, SHOP_A_KEY, EngineFactory, auth, codes, make_settings


async def test_an_expired_lot_leaves_available_for_expired(engine_factory: EngineFactory,
                                                           redis: Redis) -> None:
    engine = await engine_factory(make_settings(), worker=False)
    worker = engine.stepped_worker()
    soon = int(time.time()) + 3600
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon))
    await engine.import_codes("card-100", codes("OLD", 5), lot="old", expires_at=stamp)
    await engine.import_codes("card-100", codes("NEW", 2), lot="new")
    _, held = await engine.order(qty=2, hold_s=600, buyer="holder", wait_ms=0)
    await worker.drain()  # held: the two codes of "old" (it expires first)
    shard = keys.shard_of_sku("card-100", 4)
    assert await lots.expire_lots(redis, shard, ["card-100"], soon - 1) == 0  # not yet
    assert await lots.expire_lots(redis, shard, ["card-100"], soon + 1) == 3
    [level] = await lots.levels(redis, 4, ["card-100"])
    assert (level.available, level.held, level.expired, level.imported) == (2, 2, 3, 7)
    assert (await reconcile(redis, 4, ["card-100"])).ok
    # the hold ends: its codes come back to their expired lot, and are taken off next time
    await engine.http.delete(f"/v1/orders/{held['order_id']}", headers=auth(SHOP_A_KEY))
    assert await lots.expire_lots(redis, shard, ["card-100"], soon + 2) == 2
    resp = await engine.http.get("/admin/skus/card-100", headers=auth(OPERATOR_KEY))
    shown = await resp.json()
    assert (shown["available"], shown["expired"]) == (2, 5), shown
    report = await reconcile(redis, 4, ["card-100"])
    assert report.ok, report.violations
    metrics = await (await engine.http.get("/metrics")).text()
    assert 'kamigate_stock_codes{sku="card-100",state="expired"} 5.0' in metrics
