"""The life of waiting orders: cancel or expire one, confirm a held one, release overflow
tickets at the rate, and sweep what is due. The worker runs the release and the sweep for the
shards it owns."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.config.settings import Settings
from engine.controls.token_bucket import TokenBucket
from engine.store import keys, records, scripts
from engine.wire import OrderRecord, decode_stream_order, msgpack_encode
from engine.worker.book import read_states
from engine.worker.drain import DrainMeter, line_name
from engine.worker.matching_py import lot_order

log = logging.getLogger("kamigate.worker")
SWEEP_BATCH = 200
CATCH_UP_S = 0.25


async def unwind(redis: Redis, record: OrderRecord, mode: str, now: int
                 ) -> tuple[str, str]:
    """Cancel ("cancel") or expire ("expire") a waiting order; (status before, after)."""
    req = record.request
    shard = keys.shard_of_order(req.order_id)
    if shard is None:
        return "", ""
    raw: Any = await redis.hget(keys.order(req.order_id, shard), records.HELD_LOTS)
    # "lot:n,lot:n" (a lot id never holds a comma; its last colon ends it)
    lots = [part.rpartition(":")[0] for part in raw.decode().split(",")] if raw else []
    before, after = await scripts.UNWIND(
        redis,
        [keys.order(req.order_id, shard), keys.line(req.sku, shard),
         keys.ticket_line(record.reason, req.sku, req.storefront, shard), keys.expiries(shard),
         keys.sku_counts(req.sku, shard), keys.lots(req.sku, shard),
         keys.bought(req.sku, shard, req.buyer), keys.stream(shard), keys.outbox(shard),
         keys.settle(shard), keys.decided(shard),
         *(keys.lot_codes(req.sku, lot, shard) for lot in lots)],
        [now, mode, req.order_id, req.sku, req.buyer, req.qty],
    )
    return before.decode(), after.decode()


async def confirm(redis: Redis, record: OrderRecord, now: int) -> str:
    """Confirm a held order's payment (confirm.lua): "confirmed", or why not. Codes of a lot
    recalled meanwhile are replaced from the SKU's other lots in the matching order; when
    too few are left the order is cancelled with reason recalled (its points go back) and
    the answer is "recalled"."""
    req = record.request
    shard = keys.shard_of_order(req.order_id)
    if shard is None:
        return ""
    states = await read_states(redis, shard, [req.sku])
    state = states[req.sku]
    now_s = now // 1000
    candidates = sorted((lot for lot in state.lots if lot.count > 0 and (
        lot.expires_at == 0 or lot.expires_at > now_s)),
        key=lambda lot: lot_order(lot.lot_id, lot.expires_at))
    after: Any = await scripts.CONFIRM(
        redis, [keys.order(req.order_id, shard), keys.sku_counts(req.sku, shard),
                keys.expiries(shard), keys.outbox(shard), keys.settle(shard),
                keys.lots(req.sku, shard), keys.issued(shard), keys.decided(shard),
                *(keys.lot_codes(req.sku, lot.lot_id, shard) for lot in candidates)],
        [now, req.qty, req.order_id, req.sku, *(lot.lot_id for lot in candidates)])
    outcome = after.decode()
    if outcome == "recalled":
        _, ended = await unwind(redis, record, "recall", now)
        return "recalled" if ended == "cancelled" else ended
    return str(outcome)


async def trim_stream(redis: Redis, stream: str, group: str) -> None:
    """Drop acknowledged entries from the front of a stream, never one that is still pending
    or not yet delivered (no blind MAXLEN: those are admitted orders or unsent webhooks)."""
    try:
        pending: Any = await redis.xpending(stream, group)
        groups: Any = [] if pending["pending"] else await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream or group yet: nothing to trim
        return
    if pending["pending"]:
        floor = pending["min"]
    else:
        delivered = [g["last-delivered-id"] for g in groups
                     if g["name"] in (group, group.encode())]
        if not delivered:
            return
        floor = delivered[0]
        # MINID keeps entries >= floor: step past the last delivered one, which is acked.
        ms, _, seq = (floor.decode() if isinstance(floor, bytes) else floor).partition("-")
        floor = f"{ms}-{int(seq) + 1}"
    await redis.xtrim(stream, minid=floor, approximate=False)


async def sweep(redis: Redis, shard: int, now: int) -> int:
    """Expire the shard's queued and held orders whose time is up; how many expired."""
    due: Any = await redis.zrangebyscore(keys.expiries(shard), "-inf", now, start=0,
                                    num=SWEEP_BATCH)
    expired = 0
    for raw in due:
        try:
            record = await records.read(redis, raw.decode())
        except (ValueError, msgspec.DecodeError) as exc:
            # a record nothing can read never expires either: out of the index, or every
            # sweep would stop at it and nothing behind it would ever expire
            log.error("order %s: its record does not read (%s); left out of the expiry sweep",
                      raw.decode(), type(exc).__name__)
            record = None
        if record is None:
            await redis.zrem(keys.expiries(shard), raw)
            continue
        _, after = await unwind(redis, record, "expire", now)
        expired += after == "expired"
    return expired


class Releaser:
    """Admits overflow tickets in line order at the capacity rates: the fleet-wide global
    bucket (in Redis, shared by every worker), the SKU's bucket (its shard's owner is the
    only one releasing that SKU, so a local bucket is fleet-wide too) and each storefront's
    (in Redis: a storefront orders every SKU). A ticket whose storefront is out of tokens
    keeps its place; those behind it of other storefronts go ahead."""

    def __init__(self, settings: Settings, now_s: float) -> None:
        self.settings = settings
        self.sku_buckets = {
            s.id: TokenBucket(s.limit.rate, max(s.limit.burst, s.limit.rate * CATCH_UP_S), now_s)
            for s in settings.skus if s.limit is not None
        }

    async def release(self, redis: Redis, shard: int, now_ms: int, now_s: float,
                      meter: DrainMeter) -> int:
        members: Any = await redis.smembers(keys.overflowing(shard))
        skus = sorted(m.decode() for m in members)
        released = 0
        for sku in skus:
            waiting = int(await redis.zcard(keys.overflow_line(sku, shard)))
            want = await self._budget(redis, sku, min(waiting, 1000), now_ms, now_s)
            if want <= 0:
                continue
            head: Any = await redis.zrange(keys.overflow_line(sku, shard), 0, want - 1)
            ids = await self._per_storefront(redis, shard, [i.decode() for i in head], now_ms)
            if not ids:
                continue
            n = await scripts.RELEASE(
                redis,
                [keys.overflow_line(sku, shard), keys.stream(shard), keys.expiries(shard),
                 keys.overflowing(shard), keys.outbox(shard),
                 *(keys.order(i, shard) for i in ids)],
                [sku, msgpack_encode(ids), now_ms],
            )
            released += int(n)
            meter.record(line_name("overflow", sku), int(n))
        return released

    async def _per_storefront(self, redis: Redis, shard: int, ids: list[str], now_ms: int
                              ) -> list[str]:
        """The tickets of the head that their storefront's bucket lets through (fleet-wide,
        in Redis), in line order; the others keep their place for a later round."""
        rate = self.settings.limits.per_storefront
        if rate is None or not ids:
            return ids
        pipe = redis.pipeline(transaction=False)
        for order_id in ids:
            pipe.hget(keys.order(order_id, shard), records.REQUEST)
        owners: list[str] = []
        for raw in await pipe.execute():
            owners.append(decode_stream_order(raw).storefront if raw else "")
        granted: dict[str, int] = {}
        for storefront in dict.fromkeys(owners):
            cap = max(rate.burst, rate.rate * CATCH_UP_S)
            granted[storefront] = int(await scripts.TAKE(
                redis, [keys.bucket(f"storefront:{storefront}")],
                [now_ms, rate.rate, cap, owners.count(storefront)]))
        out = []
        for order_id, storefront in zip(ids, owners, strict=True):
            if granted[storefront] > 0:
                granted[storefront] -= 1
                out.append(order_id)
        return out

    async def _budget(self, redis: Redis, sku: str, want: int, now_ms: int,
                      now_s: float) -> int:
        if want <= 0:
            return 0
        bucket = self.sku_buckets.get(sku)
        if bucket is not None:
            want = min(want, int(bucket.tokens_now(now_s)))
        glob = self.settings.limits.global_
        rate = glob.rate if glob is not None else None
        burst = glob.burst if glob is not None else 1
        throttled = await redis.get(keys.throttle())
        if throttled is not None:  # the workers are behind: release at what they drain
            rate = float(throttled) if rate is None else min(rate, float(throttled))
        if rate is not None and want > 0:
            # The release path may bank a quarter second of tokens beyond the burst, so a
            # late round (a busy event loop) releases what it owes instead of losing it.
            cap = max(burst, rate * CATCH_UP_S)
            want = int(await scripts.TAKE(redis, [keys.bucket("global")],
                                          [now_ms, rate, cap, want]))
        if bucket is not None and want > 0:
            bucket.take(now_s, want)
        return want
