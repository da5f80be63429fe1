"""Poison entries go to the dead-letter stream with the reason and never block the shard."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.store import keys, records
from engine.worker.poison import MAX_DELIVERIES
from tests.conftest import EngineFactory, codes, eventually, make_settings


def _one_shard() -> Any:
    return make_settings(redis={"shards": 1})


async def test_an_undecodable_entry_is_dead_lettered_and_the_rest_served(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(_one_shard(), worker=False)
    await engine.import_codes("card-100", codes("PZ", 3))
    await redis.xgroup_create(keys.stream(0), keys.GROUP, id="0", mkstream=True)
    await redis.xadd(keys.stream(0), {"s": "1", "p": b"\xc1 not msgpack"})
    status, good = await engine.order(wait_ms=0)
    assert status == 202
    await engine.start_worker()

    async def served() -> bool:
        record = await records.read(redis, good["order_id"])
        return record is not None and record.status == "fulfilled"

    await eventually(served)
    dead: Any = await redis.xrange(keys.dead_letter(0))
    assert len(dead) == 1 and dead[0][1][b"reason"].startswith(b"undecodable")
    pending: Any = await redis.xpending(keys.stream(0), keys.GROUP)
    assert pending["pending"] == 0
    metrics = await (await engine.http.get("/metrics")).text()
    assert "kamigate_dead_letter_total 1.0" in metrics


async def test_an_entry_delivered_again_and_again_is_dead_lettered(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(_one_shard(), worker=False)
    await engine.import_codes("card-100", codes("PX", 3))
    await redis.xgroup_create(keys.stream(0), keys.GROUP, id="0", mkstream=True)
    _, poisoned = await engine.order(wait_ms=0, buyer="unlucky")
    # a consumer that takes it and dies, again and again
    await redis.xreadgroup(keys.GROUP, "ghost", {keys.stream(0): ">"})
    entries: Any = await redis.xrange(keys.stream(0))
    entry = next(entry_id for entry_id, fields in entries if b"p" in fields)
    for _ in range(MAX_DELIVERIES - 1):
        await redis.xclaim(keys.stream(0), keys.GROUP, "ghost", 0, [entry])
    await engine.start_worker()

    async def decided() -> bool:
        record = await records.read(redis, poisoned["order_id"])
        return record is not None and record.status != "pending"

    await eventually(decided)
    record = await records.read(redis, poisoned["order_id"])
    assert record is not None and (record.status, record.reason) == ("rejected", "dead_letter")
    dead: Any = await redis.xrange(keys.dead_letter(0))
    assert dead[0][1][b"order_id"] == poisoned["order_id"].encode()
    assert b"delivered" in dead[0][1][b"reason"]
    # the shard is not blocked: the next order is served
    status, body = await engine.order(wait_ms=2000, buyer="next")
    assert status == 201 and body["status"] == "fulfilled"
    assert (await engine.http.get("/readyz")).status == 200
