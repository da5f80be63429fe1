"""The pure-Python matching kernel: allocate one shard batch of orders to stock lots.

Rules, per SKU (DESIGN.md section 4):
1. serve in order of (tier descending, arrival ascending);
2. an order whose buyer allowance is below its qty is rejected `limit_exceeded`;
3. an order that fits in the stock left is filled whole from lots by soonest expiry (0 = never,
   last), then lot id; it may span lots, and consumes the buyer's allowance;
4. an order that does not fit is queued, or rejected `sold_out` when the SKU says so; smaller
   orders behind it may still be filled (no head-of-line blocking).
The output is deterministic: one Decision per order, in input order. An order's qty must be at
least 1 (the wire guarantees it): a batch holding one that is not is refused with ValueError,
since a qty of 0 would be "filled" with nothing and a negative one would add phantom stock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.worker.matching_types import (
    FILL,
    LIMIT_EXCEEDED,
    NO_REASON,
    QUEUE,
    REJECT,
    SOLD_OUT,
    Decision,
    MatchOrder,
    SkuBook,
)

IMPLEMENTATION = "python"
QTY_ERROR = "order qty must be at least 1, got {qty!r}"


def lot_order(lot_id: str, expires_at: int) -> tuple[int, int, str]:
    return (1 if expires_at == 0 else 0, expires_at, lot_id)


def match_batch(orders: Sequence[MatchOrder], books: Mapping[str, SkuBook]) -> list[Decision]:
    """Decide every order of the batch; orders of an unknown SKU are queued as sold out."""
    by_sku: dict[str, list[int]] = {}
    for index, order in enumerate(orders):
        if order.qty < 1:
            raise ValueError(QTY_ERROR.format(qty=order.qty))
        by_sku.setdefault(order.sku, []).append(index)
    decisions: list[Decision | None] = [None] * len(orders)
    for sku, indexes in by_sku.items():
        book = books.get(sku)
        if book is None:
            book = SkuBook([], False, 0, None)
        _match_sku(orders, indexes, book, decisions)
    return [d for d in decisions if d is not None]


def _match_sku(
    orders: Sequence[MatchOrder],
    indexes: list[int],
    book: SkuBook,
    decisions: list[Decision | None],
) -> None:
    lots = sorted(
        (lot for lot in book.lots if lot.count > 0),
        key=lambda lot: lot_order(lot.lot_id, lot.expires_at),
    )
    counts = [lot.count for lot in lots]
    left = sum(counts)
    allowances = None if book.allowances is None else dict(book.allowances)
    indexes.sort(key=lambda i: (-orders[i].tier, orders[i].arrival, i))
    first_lot = 0
    for i in indexes:
        order = orders[i]
        qty = order.qty
        if allowances is not None:
            allowance = allowances.get(order.buyer, book.buyer_limit)
            if allowance < qty:
                decisions[i] = Decision(REJECT, LIMIT_EXCEEDED, [])
                continue
        if qty > left:
            action = REJECT if book.reject_when_sold_out else QUEUE
            decisions[i] = Decision(action, SOLD_OUT, [])
            continue
        fills: list[tuple[str, int]] = []
        need = qty
        j = first_lot
        while need > 0:
            take = min(need, counts[j])
            if take > 0:
                fills.append((lots[j].lot_id, take))
                counts[j] -= take
                need -= take
            if counts[j] == 0:
                first_lot = j + 1
            j += 1
        left -= qty
        if allowances is not None:
            allowances[order.buyer] = allowances.get(order.buyer, book.buyer_limit) - qty
        decisions[i] = Decision(FILL, NO_REASON, fills)
