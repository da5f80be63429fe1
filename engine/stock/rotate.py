"""`kamigate keys rotate`: reseal every code in stock with the current key, online.

Runs of up to CHUNK codes are read from each lot's tail, opened and sealed anew, and written
back by a script that first checks the run is unchanged (a claim may have taken codes since:
then the run is read again). Codes already sealed with the current key are left alone, so a
rotation can be stopped and started again. Codes in order records stay sealed with the key
that sealed them: keep that key configured while such orders are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis

from engine.store import keys, scripts
from engine.store.sealing import Sealer
from engine.wire import msgpack_encode

CHUNK = 500


async def rotate_lot(redis: Redis, sealer: Sealer, sku: str, lot: str, shard: int,
                     progress: Callable[[int], None] | None = None) -> int:
    """Reseal one lot; the number of codes resealed."""
    name = keys.lot_codes(sku, lot, shard)
    offset = resealed = 0
    while True:
        found: Any = await redis.lrange(name, -(offset + CHUNK), -(offset + 1))
        if not found:
            return resealed
        old = [v.decode() for v in found]
        new = [v if sealer.key_of(v) == sealer.current
               else sealer.seal(sku, lot, sealer.open(sku, v)) for v in old]
        if new != old:
            done = int(await scripts.RESEAL(redis, [name], [offset, msgpack_encode(old),
                                                            msgpack_encode(new)]))
            if done < 0:
                continue  # the run moved (an import appended codes): read it again
            resealed += sum(1 for a, b in zip(old, new, strict=True) if a != b)
        if progress is not None:
            progress(len(old))
        offset += len(old)
        if len(old) < CHUNK:
            return resealed


async def rotate(redis: Redis, sealer: Sealer, shards: int, skus: list[str],
                 progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Reseal the stock of every SKU; codes resealed per SKU."""
    out = {}
    for sku in skus:
        shard = keys.shard_of_sku(sku, shards)
        lots: Any = await redis.hkeys(keys.lots(sku, shard))
        out[sku] = 0
        for lot in sorted(x.decode() for x in lots):
            out[sku] += await rotate_lot(redis, sealer, sku, lot, shard, progress)
    return out
