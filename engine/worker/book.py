"""Read what a shard batch needs to be matched: stock, waiting tickets, allowances, statuses.

The reads are not one atomic snapshot; the claim script re-checks each SKU's version, so a
plan made from reads that raced with an import or a cancel is refused whole and made again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.store import keys, records
from engine.wire import StreamOrder, decode_stream_order
from engine.worker.matching_types import Lot, MatchOrder, SkuBook


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

    def books(self, settings_skus: dict[str, Any], now_s: int,
              batch: Sequence[MatchOrder]) -> dict[str, SkuBook]:
        """Kernel input: per SKU its unexpired lots, its policy and the allowances left of the
        batch's buyers."""
        buyers: dict[str, set[str]] = {}
        for order in batch:
            buyers.setdefault(order.sku, set()).add(order.buyer)
        books: dict[str, SkuBook] = {}
        for sku, state in self.skus.items():
            policy = settings_skus.get(sku)
            lots = [lot for lot in state.lots if lot.expires_at == 0 or lot.expires_at > now_s]
            if policy is None:
                books[sku] = SkuBook([], False, 0, None)
                continue
            limit = policy.buyer_limit
            allowances = None
            if limit > 0:
                bought = state.bought
                allowances = {b: limit - bought[b] for b in buyers.get(sku, ()) if b in bought}
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


async def read_states(redis: Redis, shard: int, skus: Sequence[str]) -> dict[str, SkuState]:
    """Counters, lots and line length of each SKU (no tickets, no buyers yet)."""
    if not skus:
        return {}
    pipe = redis.pipeline(transaction=False)
    for sku in skus:
        pipe.hmget(keys.sku_counts(sku, shard), "ver", "available")
        pipe.hgetall(keys.lots(sku, shard))
        pipe.hgetall(keys.lot_expiry(sku, shard))
        pipe.zcard(keys.line(sku, shard))
    replies = await pipe.execute()
    states: dict[str, SkuState] = {}
    for i, sku in enumerate(skus):
        (ver, available), lot_counts, expiries, line_length = replies[4 * i : 4 * i + 4]
        lots = [
            Lot(lot.decode(), int(n), _int(expiries.get(lot))) for lot, n in lot_counts.items()
        ]
        states[sku] = SkuState(sku, _int(ver), _int(available), lots, line_length, [], {})
    return states


async def read_statuses(redis: Redis, shard: int, orders: Sequence[StreamOrder]
                        ) -> dict[str, str]:
    if not orders:
        return {}
    pipe = redis.pipeline(transaction=False)
    for order in orders:
        pipe.hget(keys.order(order.order_id, shard), records.STATUS)
    found = await pipe.execute()
    return {o.order_id: (st or b"").decode() for o, st in zip(orders, found, strict=True)}


async def read_tickets(redis: Redis, shard: int, states: list[SkuState], scan: int) -> None:
    """The head of each SKU's line (up to `scan` tickets), into state.tickets."""
    pipe = redis.pipeline(transaction=False)
    for state in states:
        pipe.zrange(keys.line(state.sku, shard), 0, scan - 1)
    heads: list[list[bytes]] = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for head in heads:
        for oid in head:
            pipe.hmget(keys.order(oid.decode(), shard),
                       [records.REQUEST, records.ARRIVAL, records.STATUS])
    found = iter(await pipe.execute())
    for state, head in zip(states, heads, strict=True):
        for _ in head:
            payload, seq, status = next(found)
            if payload is None or status != b"queued":
                continue  # cancelled or decided since the line was read: the claim re-checks
            state.tickets.append(Ticket(decode_stream_order(payload), int(seq)))


async def read_bought(
    redis: Redis, shard: int, states: dict[str, SkuState], buyers: dict[str, set[str]]
) -> None:
    """Codes each buyer already got per SKU, merged into state.bought: a buyer's count in its
    bucket plus what the SKU's hash of before the buckets holds."""
    wanted = [(sku, sorted(b)) for sku, b in buyers.items() if b and sku in states]
    if not wanted:
        return
    pipe = redis.pipeline(transaction=False)
    asked: list[tuple[str, list[str]]] = []
    for sku, names in wanted:
        pipe.hmget(keys.bought_unbucketed(sku, shard), names)
        asked.append((sku, names))
        buckets: dict[str, list[str]] = {}
        for name in names:
            buckets.setdefault(keys.bought(sku, shard, name), []).append(name)
        for key, members in buckets.items():
            pipe.hmget(key, members)
            asked.append((sku, members))
    for (sku, names), counts in zip(asked, await pipe.execute(), strict=True):
        bought = states[sku].bought
        for name, n in zip(names, counts, strict=True):
            bought[name] = bought.get(name, 0) + _int(n)


async def purchases(redis: Redis, sku: str, shard: int) -> dict[str, int]:
    """Every buyer's count of codes of the SKU (all buckets): for checks, not the data path."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.bought_unbucketed(sku, shard))
    for bucket in range(keys.BOUGHT_BUCKETS):
        pipe.hgetall(keys.bought_bucket(sku, shard, bucket))
    total: dict[str, int] = {}
    for found in await pipe.execute():
        for buyer, n in found.items():
            total[buyer.decode()] = total.get(buyer.decode(), 0) + int(n)
    return {buyer: n for buyer, n in total.items() if n}


def lines_to_rerun(snapshot: Snapshot, moved: set[str], line_scan: int, now_s: int) -> list[str]:
    """SKUs whose line is longer than one scan, moved, and has stock left it may sell
    (unexpired): to be run again in a later batch. A line that could not move waits for the
    next change of its stock or its line (an import, a cancel, a hold given back kick it)."""
    return [
        s.sku for s in snapshot.skus.values()
        if len(s.tickets) >= line_scan and s.sku in moved
        and any(lot.count > 0 and (lot.expires_at == 0 or lot.expires_at > now_s)
                for lot in s.lots)
    ]
