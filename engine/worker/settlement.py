"""The last step of an order that moves points: spend or give back its reservation, and grant
what it earned, on the buyer's wallet (DESIGN §8); and the compensation of an order that got
its codes late (engine/wallet/compensation.py), through the same stream.

The script that decides such an order (claim, confirm, cancel, expiry, review, dead letter)
adds it to its shard's settle stream in the same atomic call; the worker that owns the shard
drains that stream and settles each order on its wallet — another shard, so another call,
idempotent per order id — acknowledging the entry only afterwards. A crash in between leaves
the entry pending: whoever owns the shard next settles it again, harmlessly.

The sweep finishes what no stream entry covers: a reservation whose order never reached Redis
(the front door died between the two steps) is given back once it is older than GRACE_MS and
the order still does not exist; it never gives back a reservation by age alone while its
order lives, since the order may yet be fulfilled.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine import failpoints
from engine.config.settings import Settings
from engine.store import keys, records, wallet_keys
from engine.wallet import compensation, coupons, ledger

log = logging.getLogger("kamigate.worker")
GROUP = "settle"
READ_COUNT = 500
DAY_MS = 86_400_000
GRACE_MS = 300_000  # far past any door's admit time-out
RECLAIM_IDLE_MS = 5_000  # a settle step another consumer read and left this long: it died


class Settlement:
    def __init__(self, settings: Settings, redis: Redis, consumer: str) -> None:
        self.settings = settings
        self.redis = redis
        self.consumer = consumer
        self._groups: set[int] = set()
        self.settled = 0

    async def round(self, shards: list[int], now: int) -> int:
        """Settle what is decided, and sweep stranded reservations; orders settled."""
        done = 0
        for shard in shards:
            if shard not in self._groups:
                with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                    await self.redis.xgroup_create(keys.settle(shard), GROUP, id="0",
                                                   mkstream=True)
                self._groups.add(shard)
            reply: Any = await self.redis.xautoclaim(keys.settle(shard), GROUP, self.consumer,
                                                     RECLAIM_IDLE_MS, "0-0", count=READ_COUNT)
            entries = list(reply[1])
            read: Any = await self.redis.xreadgroup(GROUP, self.consumer,
                                                    {keys.settle(shard): ">"}, count=READ_COUNT)
            entries += read[0][1] if read else []
            decided = [(f[b"o"].decode(), f[b"d"] == b"post") for _, f in entries
                       if f and f[b"d"] != b"comp"]
            if decided:
                failpoints.hit("worker.before_settle")
                await self.settle_batch(decided, now)
                failpoints.hit("worker.after_settle")
            for _, fields in entries:
                if fields and fields[b"d"] == b"comp":
                    failpoints.hit("worker.before_compensate")
                    await compensation.compensate_late(self.redis, self.settings,
                                                       fields[b"o"].decode(), now)
                    failpoints.hit("worker.after_compensate")
            if entries:  # acknowledged once every step of the batch is done
                await self.redis.xack(keys.settle(shard), GROUP, *[e[0] for e in entries])
            done += len(entries)
            await self.sweep(shard, now)
            await ledger.expire_due(self.redis, shard, now)
            await ledger.remind_due(self.redis, shard, now)
            await coupons.sweep(self.redis, self.settings, shard, now)
        self.settled += done
        return done

    async def settle(self, order_id: str, post: bool, now: int) -> None:
        await self.settle_batch([(order_id, post)], now)

    async def settle_batch(self, decided: list[tuple[str, bool]], now: int) -> None:
        """Settle decided orders on their wallets: their records read in one round trip,
        then ledger.settle_many."""
        pipe = self.redis.pipeline(transaction=False)
        for order_id, _ in decided:
            pipe.hgetall(keys.order(order_id, keys.shard_of_order(order_id) or 0))
        days = self.settings.points.expire_after_days
        batch: list[ledger.Settle] = []
        for (order_id, post), fields in zip(decided, await pipe.execute(), strict=True):
            record = records.parse(fields) if keys.shard_of_order(order_id) is not None \
                else None
            if record is None:
                continue
            order = record.request
            batch.append(ledger.Settle(
                order.storefront, order.buyer, order_id, post, order.earn,
                now + days * DAY_MS if days else 0,
                ledger.notice(self.settings, order.storefront, order.buyer), order.coupons))
        await ledger.settle_many(self.redis, self.settings.redis.shards, batch, now)
        if batch:  # the retention may remove these records now (engine/worker/retention.py)
            pipe = self.redis.pipeline(transaction=False)
            for settled in batch:
                order_id = settled.order_id
                pipe.hset(keys.order(order_id, keys.shard_of_order(order_id) or 0),
                          records.POINTS_SETTLED.decode(), 1)
            await pipe.execute()

    async def sweep(self, shard: int, now: int) -> None:
        """Reservations older than GRACE_MS: given back when their order never was admitted
        (after fencing its id, so that it never is), settled when it is decided (an entry
        lost), left alone while it waits. Never given back by age alone."""
        old: Any = await self.redis.zrangebyscore(wallet_keys.open_reservations(shard), "-inf",
                                                  now - GRACE_MS, start=0, num=READ_COUNT)
        for raw in old:
            storefront, buyer, order_id = raw.decode().split("\0", 2)
            record = await records.read(self.redis, order_id)
            status = record.status if record is not None else await records.abandon(
                self.redis, order_id, now, keys.IDEMPOTENCY_TTL_S * 1000)
            if status == "abandoned":  # fenced first: a late admission cannot spend them now
                log.warning("order %s never reached its shard: its points go back", order_id)
                shards = self.settings.redis.shards
                await ledger.settle(self.redis, shards, storefront, buyer, order_id, False, now,
                                    coupon_ids=await ledger.reserved_coupons(
                                        self.redis, shards, storefront, buyer, order_id))
            elif status == "fulfilled":
                await self.settle(order_id, True, now)
            elif status in ("rejected", "expired", "cancelled"):
                await self.settle(order_id, False, now)
            else:  # still waiting: looked at again after another grace
                await self.redis.zadd(wallet_keys.open_reservations(shard), {raw: now}, xx=True)
