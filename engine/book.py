"""Read what a shard batch needs to be matched: stock, waiting tickets, allowances, statuses.

The reads are not one atomic snapshot; the claim script re-checks each SKU's version, so a
plan made from reads that raced with an import or a cancel is refused whole and made again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine import keys
from engine.config import Settings
from engine.matching_types import Lot, MatchOrder, SkuBook
from engine.wire import StreamOrder, decode_stream_order

LINE_TIERS = 10
LINE_SHIFT = 2**40


def line_score(tier: int, arrival: int) -> int:
    """Sorted-set score: higher tier first, then arrival (exact in a double up to 2**53)."""
    return (LINE_TIERS - 1 - tier) * LINE_SHIFT + arrival


class Ticket(msgspec.Struct):
    """An order waiting in a SKU's line."""

    request: StreamOrder
    arrival: int


class SkuState(msgspec.Struct):
    sku: str
    ver: int
    available: int
    lots: list[Lot]
    line_length: int
    tickets: list[Ticket]
    bought: dict[str, int]


class Snapshot(msgspec.Struct):
    skus: dict[str, SkuState]
    statuses: dict[str, str]  # order id -> status now, for the batch's new orders

    def books(self, settings_skus: dict[str, Any], now_s: int) -> dict[str, SkuBook]:
        """Kernel input: per SKU its unexpired lots, its policy and buyers' allowances left."""
        books: dict[str, SkuBook] = {}
        for sku, state in self.skus.items():
            policy = settings_skus.get(sku)
            lots = [lot for lot in state.lots if lot.expires_at == 0 or lot.expires_at > now_s]
            if policy is None:
                books[sku] = SkuBook([], False, 0, None)
                continue
            limit = policy.buyer_limit
            allowances = (
                {b: limit - n for b, n in state.bought.items()} if limit > 0 else None
            )
            books[sku] = SkuBook(lots, policy.on_sold_out == "reject", limit, allowances)
        return books

    def tickets(self) -> list[MatchOrder]:
        out = []
        for state in self.skus.values():
            for t in state.tickets:
                r = t.request
                out.append(MatchOrder(r.order_id, r.sku, r.qty, r.tier, t.arrival, r.buyer))
        return out


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


async def read_snapshot(
    redis: Redis,
    settings: Settings,
    shard: int,
    skus: Iterable[str],
    new_orders: Sequence[StreamOrder],
    statuses: bool = True,
) -> Snapshot:
    sku_list = sorted(set(skus))
    buyers: dict[str, set[str]] = {s: set() for s in sku_list}
    for order in new_orders:
        buyers.setdefault(order.sku, set()).add(order.buyer)
    pipe = redis.pipeline(transaction=False)
    for sku in sku_list:
        pipe.hmget(keys.sku_counts(sku, shard), "ver", "available")
        pipe.hgetall(keys.lots(sku, shard))
        pipe.hgetall(keys.lot_expiry(sku, shard))
        pipe.zcard(keys.line(sku, shard))
    checked = new_orders if statuses else []
    for order in checked:
        pipe.hget(keys.order(order.order_id, shard), "st")
    wanted = [(sku, sorted(b)) for sku, b in buyers.items() if b]
    for sku, names in wanted:
        pipe.hmget(keys.bought(sku, shard), names)
    replies = await pipe.execute()
    states: dict[str, SkuState] = {}
    for i, sku in enumerate(sku_list):
        (ver, available), lot_counts, expiries, line_length = replies[4 * i : 4 * i + 4]
        lots = [
            Lot(lot.decode(), int(n), _int(expiries.get(lot))) for lot, n in lot_counts.items()
        ]
        states[sku] = SkuState(sku, _int(ver), _int(available), lots, line_length, [], {})
    at = 4 * len(sku_list)
    found = {
        order.order_id: (st or b"").decode()
        for order, st in zip(checked, replies[at : at + len(checked)], strict=True)
    }
    for (sku, names), counts in zip(wanted, replies[at + len(checked) :], strict=True):
        states[sku].bought = {b: _int(n) for b, n in zip(names, counts, strict=True)}
    scan = settings.worker.line_scan
    with_line = [s for s in states.values() if s.available > 0 and s.line_length > 0]
    if with_line:
        await _read_tickets(redis, shard, with_line, scan)
        more = {
            s.sku: {t.request.buyer for t in s.tickets} - s.bought.keys() for s in with_line
        }
        await _read_bought(redis, shard, states, more)
    return Snapshot(states, found)


async def _read_tickets(redis: Redis, shard: int, states: list[SkuState], scan: int) -> None:
    pipe = redis.pipeline(transaction=False)
    for state in states:
        pipe.zrange(keys.line(state.sku, shard), 0, scan - 1)
    heads: list[list[bytes]] = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for head in heads:
        for oid in head:
            pipe.hmget(keys.order(oid.decode(), shard), "r", "seq", "st")
    records = iter(await pipe.execute())
    for state, head in zip(states, heads, strict=True):
        for _ in head:
            payload, seq, status = next(records)
            if payload is None or status != b"queued":
                continue  # cancelled or decided since the line was read: the claim re-checks
            state.tickets.append(Ticket(decode_stream_order(payload), int(seq)))


async def _read_bought(
    redis: Redis, shard: int, states: dict[str, SkuState], buyers: dict[str, set[str]]
) -> None:
    wanted = [(sku, sorted(b)) for sku, b in buyers.items() if b and sku in states]
    if not wanted:
        return
    pipe = redis.pipeline(transaction=False)
    for sku, names in wanted:
        pipe.hmget(keys.bought(sku, shard), names)
    for (sku, names), counts in zip(wanted, await pipe.execute(), strict=True):
        states[sku].bought.update({b: _int(n) for b, n in zip(names, counts, strict=True)})
