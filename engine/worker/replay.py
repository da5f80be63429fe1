"""Replies for orders an earlier claim already decided (an entry delivered twice).

A fresh batch is settled inside claim.lua itself (records, replies, counters and XACK in one
atomic call); only replays of already decided orders are answered from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from redis.asyncio import Redis

from engine.store import records
from engine.wire import Reply, msgpack_encode


async def reply_of_record(redis: Redis, order_id: str) -> Reply | None:
    record = await records.read_to_show(redis, order_id)
    if record is None:
        return None
    position = await records.position(redis, record) if record.status == "queued" else None
    expires = record.hold_expires_ms if record.status == "held" else record.queue_expires_ms
    codes = record.codes if record.status == "fulfilled" else []
    return Reply(order_id, record.status, record.updated_ms, codes, record.reason,
                 position or 0, expires)


async def replay(redis: Redis, order_ids: Iterable[str], channels: Mapping[str, str]) -> int:
    """Publish the recorded outcome of each order to its front door; replies sent."""
    by_channel: dict[str, list[Reply]] = {}
    for order_id in order_ids:
        reply = await reply_of_record(redis, order_id)
        channel = channels.get(order_id)
        if reply is not None and channel:
            by_channel.setdefault(channel, []).append(reply)
    if by_channel:
        pipe = redis.pipeline(transaction=False)
        for channel, replies in by_channel.items():
            pipe.publish(channel, msgpack_encode(replies))
        await pipe.execute()
    return sum(len(r) for r in by_channel.values())
