"""Lots of a SKU: void (recall) one, take expired ones off sale, and read the stock levels
of SKUs and their lots."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.store import keys, records, scripts, watch_keys
from engine.wire import decode_stream_order


class LotLevel(msgspec.Struct):
    lot: str
    available: int
    expires_at: int | None


class Waiting(msgspec.Struct):
    """A SKU's tickets by the line they wait in."""

    sold_out: int = 0
    overflow: int = 0
    paused: int = 0
    review: int = 0


class SkuLevel(msgspec.Struct):
    sku: str
    available: int
    held: int
    issued: int
    voided: int
    imported: int
    queued: int  # every ticket of the SKU, in any line (waiting says which)
    lots: list[LotLevel]
    waiting: Waiting = msgspec.field(default_factory=Waiting)
    expired: int = 0  # unsold codes of lots past their expiry


async def void_lot(redis: Redis, shards: int, sku: str, lot: str) -> tuple[int, int]:
    s = keys.shard_of_sku(sku, shards)
    voided, available = await scripts.VOID(
        redis, [keys.sku_counts(sku, s), keys.lots(sku, s), keys.lot_codes(sku, lot, s)], [lot]
    )
    return int(voided), int(available)


async def expire_lots(redis: Redis, shard: int, skus: Iterable[str], now_s: int) -> int:
    """Take the unsold codes of the shard's lots past their expiry off sale; codes taken."""
    taken = 0
    for sku in skus:
        expiries: Any = await redis.hgetall(keys.lot_expiry(sku, shard))
        for lot, at in expiries.items():
            if 0 < int(at) <= now_s:
                name = lot.decode()
                taken += int(await scripts.STOCK_EXPIRE(
                    redis, [keys.sku_counts(sku, shard), keys.lots(sku, shard),
                            keys.lot_expiry(sku, shard), keys.lot_codes(sku, name, shard)],
                    [name, now_s]))
    return taken


async def watch_low(redis: Redis, shard: int, sku: str, low_stock: int, groups: list[str],
                    now_ms: int) -> tuple[int, int]:
    """Flag (or clear) the SKU's low stock, telling the storefronts' event groups when it goes
    low: (1 went low now, -1 recovered now, 0 no change; available)."""
    found: Any = await scripts.STOCK_LOW(
        redis, [keys.sku_counts(sku, shard), watch_keys.low_stock(shard), keys.outbox(shard)],
        [sku, low_stock, now_ms, *groups])
    return int(found[0]), int(found[1])


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


async def levels(redis: Redis, shards: int, skus: Iterable[str],
                 storefronts: Iterable[str] = ()) -> list[SkuLevel]:
    """Stock levels and tickets of each SKU; the paused tickets are counted for the
    storefronts named."""
    names, fronts = list(skus), list(storefronts)
    pipe = redis.pipeline(transaction=False)
    for sku in names:
        s = keys.shard_of_sku(sku, shards)
        pipe.hmget(keys.sku_counts(sku, s), "available", "held", "issued", "voided", "imported",
                   "expired")
        pipe.zcard(keys.line(sku, s))
        pipe.hgetall(keys.lots(sku, s))
        pipe.hgetall(keys.lot_expiry(sku, s))
        pipe.zcard(keys.overflow_line(sku, s))
        for storefront in fronts:
            pipe.zcard(keys.parked_line(sku, storefront, s))
    replies = await pipe.execute()
    in_review = await _in_review(redis, shards)
    out = []
    step = 5 + len(fronts)
    for i, sku in enumerate(names):
        counts, line, lot_counts, expiries, overflow, *parked = replies[step * i: step * (i + 1)]
        lots = [
            LotLevel(lot.decode(), int(n), _int(expiries.get(lot)) or None)
            for lot, n in sorted(lot_counts.items())
        ]
        available, held, issued, voided, imported, expired = (_int(c) for c in counts)
        waiting = Waiting(line, overflow, sum(parked), in_review.get(sku, 0))
        queued = waiting.sold_out + waiting.overflow + waiting.paused + waiting.review
        out.append(SkuLevel(sku, available, held, issued, voided, imported, queued, lots,
                            waiting, expired))
    return out


async def _in_review(redis: Redis, shards: int) -> dict[str, int]:
    """Orders waiting for review, by SKU (the review lines hold every SKU of their shard)."""
    counts: dict[str, int] = {}
    for shard in range(shards):
        waiting: Any = await redis.zrange(keys.review_line(shard), 0, -1)
        if not waiting:
            continue
        pipe = redis.pipeline(transaction=False)
        for order_id in waiting:
            pipe.hget(keys.order(order_id.decode(), shard), records.REQUEST)
        for raw in await pipe.execute():
            if raw:
                sku = decode_stream_order(raw).sku
                counts[sku] = counts.get(sku, 0) + 1
    return counts
