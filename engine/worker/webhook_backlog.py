"""Webhook events an order still owes its receiver, kept in Redis per shard so a restart or a
new owner of the shard carries on: the order's waiting list of outbox entry ids, in order
(`webhook:waiting`), when to try again (`webhook:retries`), its attempts so far and since when
(`webhook:attempts`), and the events given up on (`webhook:dead`).

Every waiting list has a retry entry, so nothing waits without a time to be tried again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from engine.store import keys

log = logging.getLogger("kamigate.webhooks")
GROUP = "webhooks"

Event = tuple[bytes, dict[bytes, bytes]]


class Backlog:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def waiting(self, shard: int, order_ids: Sequence[str]) -> list[bool]:
        """Whether each order has undelivered events waiting."""
        found: Any = await self.redis.hmget(keys.webhook_waiting(shard), list(order_ids))
        return [bool(f) for f in found]

    async def ids(self, shard: int, order_id: str) -> list[bytes]:
        joined: Any = await self.redis.hget(keys.webhook_waiting(shard), order_id)
        return [p for p in (joined or b"").split(b",") if p]

    async def append(self, shard: int, order_id: str, ids: list[bytes]) -> None:
        """Queue events behind the order's waiting ones (an id already there is not queued
        twice: an event handed out again after a restart). Due now unless a retry is set."""
        current = await self.ids(shard, order_id)
        known = set(current)
        joined = b",".join(current + [i for i in ids if i not in known])
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.webhook_waiting(shard), order_id, joined)
        pipe.zadd(keys.webhook_retries(shard), {order_id: 0}, nx=True)
        await pipe.execute()

    async def due(self, shard: int, now_ms: int, count: int) -> list[str]:
        found: Any = await self.redis.zrangebyscore(keys.webhook_retries(shard), "-inf", now_ms,
                                                    start=0, num=count)
        return [raw.decode() for raw in found]

    async def events(self, shard: int, ids: list[bytes]) -> list[Event]:
        """The outbox entries of the ids still there, in order."""
        out: list[Event] = []
        for entry_id in ids:
            found: Any = await self.redis.xrange(keys.outbox(shard), entry_id, entry_id)
            if found:
                out.append(found[0])
        return out

    async def attempts(self, shard: int, order_id: str) -> tuple[int, int]:
        """(attempts so far, unix ms of the first failure; 0: none yet)."""
        raw: Any = await self.redis.hget(keys.webhook_attempts(shard), order_id)
        attempt, _, since = (raw or b"0:0").partition(b":")
        return int(attempt), int(since or 0)

    async def retry(self, shard: int, order_id: str, ids: list[bytes], attempt: int,
                    since_ms: int, at_ms: float) -> None:
        """These (and only these) wait for the order's next try, at `at_ms`."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.webhook_waiting(shard), order_id, b",".join(ids))
        pipe.hset(keys.webhook_attempts(shard), order_id, f"{attempt}:{since_ms}")
        pipe.zadd(keys.webhook_retries(shard), {order_id: at_ms})
        await pipe.execute()

    async def retry_at(self, shard: int, order_id: str, at_ms: float) -> None:
        await self.redis.zadd(keys.webhook_retries(shard), {order_id: at_ms})

    async def forget(self, shard: int, order_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(keys.webhook_waiting(shard), order_id)
        pipe.zrem(keys.webhook_retries(shard), order_id)
        pipe.hdel(keys.webhook_attempts(shard), order_id)
        await pipe.execute()

    async def dead_letter(self, shard: int, order_id: str, ids: list[bytes], why: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xadd(keys.webhook_dead(shard), {"o": order_id, "event": entry_id, "why": why})
            pipe.xack(keys.outbox(shard), GROUP, entry_id)
        await pipe.execute()
        log.warning("webhook event of order %s dead-lettered: %s", order_id, why)
