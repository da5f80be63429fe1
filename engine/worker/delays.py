"""order.delayed: a storefront with an events_url hears when one of its tickets waits longer
than the ETA it was given, with the new ETA (the "your order will take 30 minutes longer"
notice).

The worker that owns a shard watches its tickets every WATCH_EVERY_S: a ticket seen for the
first time with an ETA is expected at now + ETA (position / the line's drain rate, as the
front door answers it; kept on its record) and is late at now + max(ETA +
`[waiting_room] delay_notice_s`, `delay_factor` x ETA), kept in the shard's promised index. A
ticket still queued when it is late gets one order.delayed event (order_delay.lua, with the
event in the outbox in the same call) and is expected again at its new ETA, late by the same
rule — or looked at again after STILL_RECHECK_MS when its line has stopped. A decided
ticket leaves the index the next time it is due. Only tickets of storefronts with an
events_url are watched, so a shop without one pays nothing.
"""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from engine.config.settings import Settings
from engine.store import keys, records, scripts, watch_keys
from engine.wire import StreamOrder, decode_stream_order
from engine.worker.drain import eta_s

WATCH_EVERY_S = 5.0
STILL_RECHECK_MS = 600_000
BATCH = 500


class DelayWatch:
    def __init__(self, settings: Settings) -> None:
        self._looked_at: dict[int, float] = {}
        self._ignored: dict[int, set[bytes]] = {}  # tickets of storefronts without events
        self.use(settings)

    def use(self, settings: Settings) -> None:
        self.notice_ms = settings.waiting_room.delay_notice_s * 1000
        self.factor = settings.waiting_room.delay_factor
        self.watched = frozenset(s.id for s in settings.storefronts if s.events_url)

    def late_at(self, now: int, eta_ms: int) -> int:
        """When a ticket expected `eta_ms` after `now` counts as late."""
        return now + max(eta_ms + self.notice_ms, int(self.factor * eta_ms))

    async def round(self, redis: Redis, shard: int, now: int, rates: dict[str, float],
                    force: bool = False) -> int:
        """Watch the shard's new tickets and tell the late ones; order.delayed events added."""
        clock = time.monotonic()
        if not self.watched or not self.notice_ms or (
                not force and clock - self._looked_at.get(shard, -WATCH_EVERY_S) <
                WATCH_EVERY_S):
            return 0
        self._looked_at[shard] = clock
        await self._expect_new(redis, shard, now, rates)
        return await self._tell_late(redis, shard, now, rates)

    async def _expect_new(self, redis: Redis, shard: int, now: int,
                          rates: dict[str, float]) -> None:
        waiting: list[Any] = await redis.zrange(keys.expiries(shard), 0, -1)
        ignored = self._ignored.setdefault(shard, set())
        ignored &= set(waiting)  # what left the shard's expiries is forgotten
        fresh = [w for w in waiting if w not in ignored]
        for start in range(0, len(fresh), BATCH):
            batch = fresh[start:start + BATCH]
            known: list[Any] = await redis.zmscore(watch_keys.promised(shard), batch)
            new = [oid for oid, score in zip(batch, known, strict=True) if score is None]
            for oid, (expected, ignore) in zip(new, await self._expectations(
                    redis, shard, now, rates, new), strict=True):
                if ignore:
                    ignored.add(oid)
                elif expected:
                    pipe = redis.pipeline(transaction=True)
                    pipe.hset(keys.order(oid.decode(), shard), records.PROMISED, expected)
                    pipe.zadd(watch_keys.promised(shard),
                              {oid: self.late_at(now, expected - now)}, nx=True)
                    await pipe.execute()

    async def _expectations(self, redis: Redis, shard: int, now: int, rates: dict[str, float],
                            order_ids: list[bytes]) -> list[tuple[int, bool]]:
        """(when each ticket is expected, 0 while its line is still; whether it is never to
        be watched: held, or of a storefront without events)."""
        out: list[tuple[int, bool]] = []
        for oid in order_ids:
            where = await self._where(redis, shard, oid.decode())
            if where is None:
                out.append((0, True))
                continue
            eta = eta_s(rates, where[1], where[0].sku, where[2])
            out.append((now + int(eta * 1000) if eta is not None else 0, False))
        return out

    async def _where(self, redis: Redis, shard: int, order_id: str
                     ) -> tuple[StreamOrder, str, int | None, int] | None:
        """(request, reason, position, when it was expected) of a watched ticket; None for
        anything else."""
        found: Any = await redis.hmget(keys.order(order_id, shard), [
            records.REQUEST, records.STATUS, records.REASON, records.PROMISED])
        raw, status, why, promised = found
        if raw is None or status != b"queued":
            return None
        request = decode_stream_order(raw)
        if request.storefront not in self.watched:
            return None
        reason = why.decode() if why else "sold_out"
        line = keys.ticket_line(reason, request.sku, request.storefront, shard)
        rank: Any = await redis.zrank(line, order_id)
        return request, reason, None if rank is None else int(rank) + 1, int(promised or 0)

    async def _tell_late(self, redis: Redis, shard: int, now: int,
                         rates: dict[str, float]) -> int:
        late: list[Any] = await redis.zrangebyscore(
            watch_keys.promised(shard), "-inf", now, start=0, num=BATCH, withscores=True)
        told = 0
        for oid, score in late:
            order_id = oid.decode()
            where = await self._where(redis, shard, order_id)
            if where is None:
                await redis.zrem(watch_keys.promised(shard), oid)
                continue
            request, reason, position, was = where
            eta = eta_s(rates, reason, request.sku, position)
            expected = now + int(eta * 1000) if eta is not None else 0
            again = self.late_at(now, expected - now) if expected else now + STILL_RECHECK_MS
            told += int(await scripts.ORDER_DELAY(
                redis, [watch_keys.promised(shard), keys.order(order_id, shard),
                        keys.outbox(shard)],
                [order_id, int(score), expected, again, now,
                 request.storefront, request.buyer, request.sku, was or int(score)]))
        return told
