"""Order records in Redis, the places of tickets in their lines, and the webhook outbox entry.

An order's record is a hash, `kg:{s<k>}:o:<order id>` (keys.order). The Lua scripts write it
(each names the fields it touches in its header); Python reads it through the names below.

    field  name here       what it holds
    r      REQUEST         the admitted request: a msgpack StreamOrder, never changed
    st     STATUS          pending, queued, fulfilled, held, rejected, expired, cancelled
    c      CREATED         when it was admitted, unix ms
    a      ADMITTED        when a ticket entered the stream (released, approved), unix ms
    u      UPDATED         its last change, unix ms
    seq    ARRIVAL         its arrival number in the shard, once it is (or was) a ticket
    why    REASON          why it waits (a TicketReason) or why it ended (reject reason)
    qexp   QUEUE_EXPIRES   when a ticket expires, unix ms
    hexp   HOLD_EXPIRES    when a hold ends (then its codes go back), unix ms
    codes  CODES           its codes, newline-joined (fulfilled or held), as stored
    lots   HELD_LOTS       "lot:n,lot:n": where held codes go back to
    nu     NOTIFY          1 when it has a notify_url: its changes go to the outbox
    rq     REVIEW_AFTER    1 on a paused ticket that goes to review when the pause ends
    rv     REVIEWED_BY     who approved or rejected it in review
    pt     SETTLES_POINTS  1 when its decision moves points (the shard's settle stream)
    ab     ABANDONED       alone in a record: the id is fenced, admit.lua refuses it (when)
    late   LATE            1 on a held order whose codes came after [compensation]
                           delay_over_s: compensated when it is confirmed
    ps     POINTS_SETTLED  1 once a decided order's points (and coupons) are settled: the
                           retention may then remove it
    pe     PROMISED        when a watched ticket is expected to be served, unix ms
                           (order.delayed: engine/worker/delays.py)

An entry of a shard's order stream (keys.stream) holds ENTRY_PAYLOAD (the StreamOrder) and
ENTRY_ARRIVAL (its arrival number), or ENTRY_KICK (a SKU whose line is to be run again).

A waiting line is a sorted set of order ids scored by line_score: higher tier first, then
arrival. An outbox entry (keys.outbox, one per change of an order with a notify_url) holds
OUTBOX_ORDER, OUTBOX_STATUS, OUTBOX_UPDATED, OUTBOX_REASON, OUTBOX_EXPIRES, OUTBOX_POSITION;
an entry with OUTBOX_EVENT is a storefront event for the storefront's events_url instead, its
OUTBOX_ORDER an order id (order.delayed) or event_group() (a buyer's points, compensation).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from engine.store import keys, replication, scripts
from engine.wire import OrderRecord, as_status, decode_stream_order

REQUEST = b"r"
STATUS = b"st"
CREATED = b"c"
ADMITTED = b"a"
UPDATED = b"u"
ARRIVAL = b"seq"
REASON = b"why"
QUEUE_EXPIRES = b"qexp"
HOLD_EXPIRES = b"hexp"
CODES = b"codes"
HELD_LOTS = b"lots"
NOTIFY = b"nu"
REVIEW_AFTER = b"rq"
REVIEWED_BY = b"rv"
SETTLES_POINTS = b"pt"
ABANDONED = b"ab"
LATE = b"late"
PROMISED = b"pe"
POINTS_SETTLED = b"ps"

ENTRY_PAYLOAD = b"p"
ENTRY_ARRIVAL = b"s"
ENTRY_KICK = b"kick"

OUTBOX_ORDER = b"o"
OUTBOX_STATUS = b"st"
OUTBOX_UPDATED = b"u"
OUTBOX_REASON = b"why"
OUTBOX_EXPIRES = b"x"
OUTBOX_POSITION = b"p"
OUTBOX_EVENT = b"ev"  # a storefront event (engine/worker/storefront_events.py), not a change
EVENT_GROUP = "ev:"  # OUTBOX_ORDER of a buyer's account events: "ev:<storefront>:<buyer>"


def event_group(storefront: str, buyer: str) -> str:
    """Where a buyer's account events queue in the outbox: sent in order, like an order's."""
    return f"{EVENT_GROUP}{storefront}:{buyer}"

LINE_TIERS = 10
LINE_SHIFT = 2**40


def line_score(tier: int, arrival: int) -> int:
    """Sorted-set score: higher tier first, then arrival (exact in a double up to 2**53)."""
    return (LINE_TIERS - 1 - tier) * LINE_SHIFT + arrival


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


def parse(fields: Mapping[Any, Any]) -> OrderRecord | None:
    if REQUEST not in fields:
        return None
    codes = fields.get(CODES)
    return OrderRecord(
        request=decode_stream_order(fields[REQUEST]),
        status=as_status(fields.get(STATUS, b"pending").decode()),
        arrival=_int(fields.get(ARRIVAL)),
        created_ms=_int(fields.get(CREATED)),
        updated_ms=_int(fields.get(UPDATED)),
        codes=codes.decode().split("\n") if codes else [],
        reason=fields.get(REASON, b"").decode(),
        queue_expires_ms=_int(fields.get(QUEUE_EXPIRES)),
        hold_expires_ms=_int(fields.get(HOLD_EXPIRES)),
        admitted_ms=_int(fields.get(ADMITTED) or fields.get(CREATED)),
    )


async def read(redis: Redis, order_id: str) -> OrderRecord | None:
    """The order's record, or None for an unknown or malformed id."""
    shard = keys.shard_of_order(order_id)
    if shard is None:
        return None
    return parse(await redis.hgetall(keys.order(order_id, shard)))


async def read_to_show(redis: Redis, order_id: str) -> OrderRecord | None:
    """read(), for a record about to leave kamigate (an answer, a page, a webhook, a reply):
    with [redis] wait_replicas its codes are shown only once replicas hold them (a fence;
    NotReplicated when they do not in time). The worker's own reads need no fence."""
    found = await read(redis, order_id)
    shard = keys.shard_of_order(order_id)
    if found is not None and found.codes and shard is not None:
        await replication.fence(redis, keys.fence(shard))
    return found


async def abandon(redis: Redis, order_id: str, now: int, keep_ms: int) -> str:
    """Fence an order id that never reached its shard (abandon.lua): "abandoned", or the
    status of an order admitted first."""
    shard = keys.shard_of_order(order_id)
    if shard is None:
        return "abandoned"
    status = await scripts.ABANDON(redis, [keys.order(order_id, shard)], [now, keep_ms])
    return str(status.decode() if isinstance(status, bytes) else status)


async def position(redis: Redis, record: OrderRecord) -> int | None:
    """1-based place in the SKU's line, or None when not in it."""
    shard = keys.shard_of_order(record.request.order_id)
    if shard is None:
        return None
    sku = record.request.sku
    line = keys.ticket_line(record.reason, sku, record.request.storefront, shard)
    rank = await redis.zrank(line, record.request.order_id)
    return None if rank is None else int(rank) + 1  # type: ignore[arg-type]
