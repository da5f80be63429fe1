"""Where each supplier's restocking of each SKU stands: kept in Redis by the worker that owns
the SKU's shard (so a worker that takes over sends a request in progress again with the same
request_id), read by `kamigate status` and /metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.store import watch_keys


class SupplyState(msgspec.Struct, kw_only=True):
    supplier: str
    sku: str
    request_id: str = ""  # the request in progress: sent again, unchanged, until it succeeds
    failures: int = 0  # in a row
    next_at_ms: int = 0  # not asked again before (a back-off, or the pause after a batch)
    last_attempt_ms: int = 0
    last_success_ms: int = 0
    last_error: str = ""
    last_batch: str = ""
    batches: int = 0  # answers imported
    codes_received: int = 0  # codes added to stock
    duplicates: int = 0  # codes a supplier sent that the SKU had already seen (skipped)
    failed: int = 0  # failures, all told

    @property
    def field(self) -> str:
        return f"{self.supplier}|{self.sku}"


_decode = msgspec.json.Decoder(SupplyState).decode


async def load(redis: Redis, shard: int) -> dict[str, SupplyState]:
    """The states of a shard's SKUs, by "<supplier>|<sku>"."""
    raw: Any = await redis.hgetall(watch_keys.supplies(shard))
    found = {}
    for field, value in raw.items():
        try:
            found[field.decode()] = _decode(value)
        except msgspec.DecodeError:
            continue  # written by a newer version: left alone
    return found


async def save(redis: Redis, shard: int, state: SupplyState) -> None:
    await redis.hset(watch_keys.supplies(shard), state.field, msgspec.json.encode(state))


async def everything(redis: Redis, shards: int) -> list[SupplyState]:
    """Every supplier's state for every SKU, by supplier then SKU."""
    found: list[SupplyState] = []
    for shard in range(shards):
        found += (await load(redis, shard)).values()
    return sorted(found, key=lambda s: (s.supplier, s.sku))
