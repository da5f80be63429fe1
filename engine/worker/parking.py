"""Tickets that wait for something other than capacity: parked while their scope is paused or
a maintenance window queues its orders (moved to the overflow line when it ends) and held for
an operator's review."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records, scripts
from engine.wire import OrderRecord, msgpack_encode

UNPARK_BATCH = 1000


async def unpark(redis: Redis, shard: int, held: Callable[[str, str], bool]) -> int:
    """Move the tickets of every parked line no longer `held` (storefront, SKU: a pause or a
    maintenance window that queues is in force) to their overflow line; the number moved."""
    members: Any = await redis.smembers(keys.parking(shard))
    moved = 0
    for member in sorted(m.decode() for m in members):
        storefront, _, sku = member.partition(":")
        if held(storefront, sku):
            continue
        parked = keys.parked_line(sku, storefront, shard)
        head: Any = await redis.zrange(parked, 0, UNPARK_BATCH - 1)
        ids = [i.decode() for i in head]
        moved += int(await scripts.UNPARK(
            redis,
            [parked, keys.overflow_line(sku, shard), keys.overflowing(shard),
             keys.parking(shard), keys.review_line(shard),
             *(keys.order(i, shard) for i in ids)],
            [sku, member, msgpack_encode(ids)],
        ))
    return moved


async def waiting_review(redis: Redis, shards: int, limit: int = 200
                         ) -> list[tuple[OrderRecord, int]]:
    """Orders waiting for review, oldest first per shard, with their position."""
    found: list[tuple[OrderRecord, int]] = []
    for shard in range(shards):
        ids: Any = await redis.zrange(keys.review_line(shard), 0, limit - 1)
        for position, raw in enumerate(ids, start=1):
            record = await records.read(redis, raw.decode())
            if record is not None:
                found.append((record, position))
    found.sort(key=lambda item: item[0].created_ms)
    return found[:limit]


async def decide(redis: Redis, order_id: str, decision: Literal["approve", "reject"],
                 by: str) -> tuple[str, str]:
    """Approve (the order is claimed like any other) or reject an order waiting for review;
    (status before, after), equal when it was not waiting for review."""
    shard = keys.shard_of_order(order_id)
    if shard is None:
        return "", ""
    before, after = await scripts.REVIEW(
        redis,
        [keys.review_line(shard), keys.stream(shard), keys.expiries(shard),
         keys.outbox(shard), keys.order(order_id, shard), keys.settle(shard),
         keys.decided(shard)],
        [order_id, decision, now_ms(), by],
    )
    return before.decode(), after.decode()
