"""A worker's view of its shard's stock, kept between batches.

The worker owns its shard (a lease), so between two of its claims the stock changes only
through an import, a void or a cancel, and each of those bumps the SKU's version. The view
therefore reuses what it read and what its own claims changed, and reads again only what it
does not know: SKUs it has not seen, SKUs named by a "run the line" kick, and everything after a
plan was refused as stale. The claim script checks every version, so a stale view costs one
refused plan, never a wrong claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from redis.asyncio import Redis

from engine.config.settings import Sku
from engine.wire import StreamOrder
from engine.worker.book import (
    SkuState,
    Snapshot,
    read_bought,
    read_states,
    read_statuses,
    read_tickets,
)
from engine.worker.matching_types import FILL, QUEUE, Decision, Lot, MatchOrder

MAX_BUYERS_CACHED = 100_000


class ShardView:
    def __init__(self, shard: int, line_scan: int) -> None:
        self.shard = shard
        self.line_scan = line_scan
        self.known: dict[str, SkuState] = {}

    def forget(self, skus: Iterable[str] | None = None) -> None:
        if skus is None:
            self.known.clear()
        for sku in skus or ():
            self.known.pop(sku, None)

    async def snapshot(
        self,
        redis: Redis,
        policies: dict[str, Sku],
        skus: Iterable[str],
        orders: Sequence[StreamOrder],
        check_statuses: bool,
    ) -> Snapshot:
        wanted = sorted(set(skus))
        fresh = await read_states(redis, self.shard, [s for s in wanted if s not in self.known])
        self.known.update(fresh)
        states = {sku: self.known[sku] for sku in wanted}
        for state in states.values():
            state.tickets = []
        statuses = await read_statuses(redis, self.shard, orders if check_statuses else [])
        with_line = [s for s in states.values() if s.available > 0 and s.line_length > 0]
        if with_line:
            await read_tickets(redis, self.shard, with_line, self.line_scan)
        buyers: dict[str, set[str]] = {}
        for order in orders:
            buyers.setdefault(order.sku, set()).add(order.buyer)
        for state in with_line:
            buyers.setdefault(state.sku, set()).update(t.request.buyer for t in state.tickets)
        missing = {
            sku: names - states[sku].bought.keys()
            for sku, names in buyers.items()
            if sku in policies and policies[sku].buyer_limit > 0
        }
        await read_bought(redis, self.shard, states, missing)
        return Snapshot(states, statuses)

    def applied(self, snapshot: Snapshot, batch: Sequence[MatchOrder],
                decisions: Sequence[Decision], new_ids: set[str]) -> None:
        """Fold a claim that succeeded into the view, as claim.lua changed Redis."""
        taken: dict[str, dict[str, int]] = {}
        for order, decision in zip(batch, decisions, strict=True):
            is_new = order.order_id in new_ids
            if not is_new and decision.action == QUEUE:
                continue  # a ticket that stays: not in the plan
            state = snapshot.skus[order.sku]
            from_lots = taken.setdefault(order.sku, {})
            if decision.action == FILL:
                for lot_id, n in decision.fills:
                    from_lots[lot_id] = from_lots.get(lot_id, 0) + n
                state.available -= order.qty
                state.bought[order.buyer] = state.bought.get(order.buyer, 0) + order.qty
            if is_new and decision.action == QUEUE:
                state.line_length += 1
            elif not is_new:
                state.line_length -= 1
        for sku, from_lots in taken.items():
            state = snapshot.skus[sku]
            if from_lots:
                state.lots = [Lot(lot.lot_id, lot.count - from_lots.get(lot.lot_id, 0),
                                  lot.expires_at) for lot in state.lots]
            state.ver += 1
            if len(state.bought) > MAX_BUYERS_CACHED:
                state.bought = {}
