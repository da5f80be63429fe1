"""Retention: a decided order's record is kept `[orders] retention_s` after it was decided,
then appended to its shard's archive stream and removed (retire.lua), a small batch per
round, oldest first, so memory stays bounded and Redis is never blocked for long.
`kamigate export` writes the archive out and removes what it wrote. Orders that still wait
(queued, held, pending) are never touched: only the scripts that decide an order put it in
the shard's decided stream."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.store import keys, scripts
from engine.wire import msgpack_encode

BATCH = 200


async def retire(redis: Redis, shard: int, now_ms: int, retention_s: int,
                 rounds: int = 5) -> int:
    """Retire what is due on the shard, at most `rounds` batches; the orders retired."""
    cutoff = now_ms - retention_s * 1000
    retired = 0
    for _ in range(rounds):
        due: Any = await redis.xrange(keys.decided(shard), "-", str(max(0, cutoff - 1)),
                                      count=BATCH)
        if not due:
            break
        items = [(entry_id.decode(), fields[b"o"].decode()) for entry_id, fields in due]
        done, _kept = await scripts.RETIRE(
            redis, [keys.decided(shard), keys.archive(shard),
                    *(keys.order(order_id, shard) for _, order_id in items)],
            [msgpack_encode(items)])
        retired += int(done)
        if len(due) < BATCH:
            break
    return retired
