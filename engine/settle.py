"""Settle a claimed batch: replies to the front doors that wait, counters, then XACK."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from engine import keys, records
from engine.claim import Outcome
from engine.wire import Reply, msgpack_encode


async def outcome_of_record(redis: Redis, shard: int, order_id: str) -> Outcome:
    """The outcome an earlier claim already wrote (an entry delivered twice)."""
    record = await records.read(redis, order_id)
    if record is None:
        return Outcome(order_id, "rejected", [], "unknown_order", 0)
    position = await records.position(redis, record) if record.status == "queued" else None
    expires = record.hold_expires_ms if record.status == "held" else record.queue_expires_ms
    codes = record.codes if record.status in ("fulfilled", "held") else []
    return Outcome(order_id, record.status, codes, record.reason, position or 0, expires)


class Settler:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def settle(
        self,
        shard: int,
        entry_ids: Sequence[bytes],
        outcomes: Sequence[Outcome],
        channels: dict[str, str],
        rerun: set[str],
    ) -> None:
        """One pipeline: publish replies per channel, count, re-kick long lines, XACK."""
        now_by_channel: dict[str, list[Reply]] = {}
        counts: dict[str, int] = {}
        for o in outcomes:
            counts[o.status] = counts.get(o.status, 0) + 1
            channel = channels.get(o.order_id)
            if not channel:
                continue
            codes = o.codes if o.status == "fulfilled" else []
            now_by_channel.setdefault(channel, []).append(
                Reply(o.order_id, o.status, 0, codes, o.reason, o.position, o.expires_ms)
            )
        pipe = self.redis.pipeline(transaction=False)
        for channel, replies in now_by_channel.items():
            pipe.publish(channel, msgpack_encode(replies))
        stats = keys.stats()
        for status, n in counts.items():
            pipe.hincrby(stats, status, n)
        if outcomes:
            pipe.hincrby(stats, "claim_batches", 1)
            pipe.hincrby(stats, "claim_orders", len(outcomes))
            pipe.hincrby(stats, f"claim_size_le_{_bucket(len(outcomes))}", 1)
        for sku in sorted(rerun):
            pipe.xadd(keys.stream(shard), {"kick": sku})
        if entry_ids:
            pipe.xack(keys.stream(shard), keys.GROUP, *entry_ids)
        await pipe.execute()


CLAIM_SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)


def _bucket(n: int) -> str:
    for bound in CLAIM_SIZE_BUCKETS:
        if n <= bound:
            return str(bound)
    return "inf"
