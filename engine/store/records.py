"""Order records in Redis: read one back as a typed value (for GET, replays and re-replies)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from engine.store import keys
from engine.wire import OrderRecord, decode_stream_order

LINE_TIERS = 10
LINE_SHIFT = 2**40


def line_score(tier: int, arrival: int) -> int:
    """Sorted-set score: higher tier first, then arrival (exact in a double up to 2**53)."""
    return (LINE_TIERS - 1 - tier) * LINE_SHIFT + arrival


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


def parse(fields: Mapping[Any, Any]) -> OrderRecord | None:
    if b"r" not in fields:
        return None
    codes = fields.get(b"codes")
    return OrderRecord(
        request=decode_stream_order(fields[b"r"]),
        status=fields.get(b"st", b"pending").decode(),
        arrival=_int(fields.get(b"seq")),
        created_ms=_int(fields.get(b"c")),
        updated_ms=_int(fields.get(b"u")),
        codes=codes.decode().split("\n") if codes else [],
        reason=fields.get(b"why", b"").decode(),
        queue_expires_ms=_int(fields.get(b"qexp")),
        hold_expires_ms=_int(fields.get(b"hexp")),
        admitted_ms=_int(fields.get(b"a") or fields.get(b"c")),
    )


async def read(redis: Redis, order_id: str) -> OrderRecord | None:
    """The order's record, or None for an unknown or malformed id."""
    shard = keys.shard_of_order(order_id)
    if shard is None:
        return None
    return parse(await redis.hgetall(keys.order(order_id, shard)))


async def position(redis: Redis, record: OrderRecord) -> int | None:
    """1-based place in the SKU's line, or None when not in it."""
    shard = keys.shard_of_order(record.request.order_id)
    if shard is None:
        return None
    sku = record.request.sku
    line = keys.ticket_line(record.reason, sku, record.request.storefront, shard)
    rank = await redis.zrank(line, record.request.order_id)
    return None if rank is None else int(rank) + 1  # type: ignore[arg-type]
