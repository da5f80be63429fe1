"""Poison entries: an order-stream entry that cannot be decoded, or that was delivered
MAX_DELIVERIES times without being acknowledged (each time its batch failed or its worker
died), goes to the shard's dead-letter stream with the reason and is acknowledged, so it
never blocks the shard. Its order, if there is one, ends as rejected (reason `dead_letter`)
rather than pending forever; operators see the count in /metrics and `kamigate status`."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from engine.clock import now_ms
from engine.store import keys, records, scripts
from engine.wire import StreamOrder, decode_stream_order

log = logging.getLogger("kamigate.worker")
MAX_DELIVERIES = 5
Entry = tuple[bytes, dict[bytes, bytes]]


async def bury(redis: Redis, shard: int, entry_id: bytes, fields: dict[bytes, bytes],
               reason: str) -> None:
    """Move one entry to the dead-letter stream (payload kept: no codes travel in it)."""
    order_id = ""
    with contextlib.suppress(Exception):  # undecodable may be why it is buried
        order_id = decode_stream_order(fields[records.ENTRY_PAYLOAD]).order_id
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(keys.dead_letter(shard), {"entry": entry_id, "reason": reason,
                                        "order_id": order_id,
                                        "p": fields.get(records.ENTRY_PAYLOAD, b"")})
    pipe.xack(keys.stream(shard), keys.GROUP, entry_id)
    pipe.hincrby(keys.stats(shard), "dead_letter", 1)
    await pipe.execute()
    if order_id:
        await scripts.DEAD_LETTER(redis, [keys.order(order_id, shard), keys.settle(shard),
                                          keys.decided(shard)], [now_ms(), order_id])
    log.error("shard %d: stream entry %s dead-lettered (%s)", shard, entry_id.decode(), reason)


async def sort_out(redis: Redis, shard: int, entries: Sequence[Entry]) -> list[Entry]:
    """Reclaimed entries worth another try; those delivered MAX_DELIVERIES times are buried."""
    gone = [entry_id for entry_id, fields in entries if not fields]
    if gone:  # trimmed or deleted under us (Redis < 7 still hands them out): nothing to run
        await redis.xack(keys.stream(shard), keys.GROUP, *gone)
    entries = [e for e in entries if e[1]]
    if not entries:
        return []
    first, last = entries[0][0], entries[-1][0]
    pending: Any = await redis.xpending_range(keys.stream(shard), keys.GROUP, min=first,
                                              max=last, count=len(entries))
    delivered = {p["message_id"]: int(p["times_delivered"]) for p in pending}
    keep = []
    for entry_id, fields in entries:
        times = delivered.get(entry_id, 0)
        if times >= MAX_DELIVERIES:
            await bury(redis, shard, entry_id, fields,
                       f"delivered {times} times without being acknowledged")
        else:
            keep.append((entry_id, fields))
    return keep


async def read_entries(redis: Redis, shard: int, entries: Sequence[Entry]
                       ) -> tuple[list[StreamOrder], dict[str, int], set[str], set[bytes]]:
    """A batch's entries as (orders, their arrival numbers by id, SKUs kicked, entries
    buried as undecodable)."""
    orders: list[StreamOrder] = []
    arrivals: dict[str, int] = {}
    kicks: set[str] = set()
    buried: set[bytes] = set()
    for entry_id, fields in entries:
        if records.ENTRY_KICK in fields:
            kicks.add(fields[records.ENTRY_KICK].decode())
            continue
        try:
            order = decode_stream_order(fields[records.ENTRY_PAYLOAD])
            arrival = int(fields[records.ENTRY_ARRIVAL])
        except Exception as exc:
            await bury(redis, shard, entry_id, fields, f"undecodable: {type(exc).__name__}")
            buried.add(entry_id)
            continue
        if order.order_id in arrivals:
            continue  # admitted twice (two racing re-admits): one claim, both entries acked
        orders.append(order)
        arrivals[order.order_id] = arrival
    return orders, arrivals, kicks, buried
