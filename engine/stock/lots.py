"""Lots of a SKU: void (recall) one, and read the stock levels of SKUs and their lots."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from redis.asyncio import Redis

from engine.store import keys, scripts


class LotLevel(msgspec.Struct):
    lot: str
    available: int
    expires_at: int | None


class SkuLevel(msgspec.Struct):
    sku: str
    available: int
    held: int
    issued: int
    voided: int
    imported: int
    queued: int
    lots: list[LotLevel]


async def void_lot(redis: Redis, shards: int, sku: str, lot: str) -> tuple[int, int]:
    s = keys.shard_of_sku(sku, shards)
    voided, available = await scripts.VOID(
        redis, [keys.sku_counts(sku, s), keys.lots(sku, s), keys.lot_codes(sku, lot, s)], [lot]
    )
    return int(voided), int(available)


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


async def levels(redis: Redis, shards: int, skus: Iterable[str]) -> list[SkuLevel]:
    names = list(skus)
    pipe = redis.pipeline(transaction=False)
    for sku in names:
        s = keys.shard_of_sku(sku, shards)
        pipe.hmget(keys.sku_counts(sku, s), "available", "held", "issued", "voided", "imported")
        pipe.zcard(keys.line(sku, s))
        pipe.hgetall(keys.lots(sku, s))
        pipe.hgetall(keys.lot_expiry(sku, s))
    replies = await pipe.execute()
    out = []
    for i, sku in enumerate(names):
        counts, queued, lot_counts, expiries = replies[4 * i : 4 * i + 4]
        lots = [
            LotLevel(lot.decode(), int(n), _int(expiries.get(lot)) or None)
            for lot, n in sorted(lot_counts.items())
        ]
        available, held, issued, voided, imported = (_int(c) for c in counts)
        out.append(SkuLevel(sku, available, held, issued, voided, imported, queued, lots))
    return out
