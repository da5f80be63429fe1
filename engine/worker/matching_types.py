"""The matching kernel's vocabulary, shared by the pure twin, the compiled kernel and callers."""

from __future__ import annotations

from typing import NamedTuple

FILL = 1
QUEUE = 2
REJECT = 3

NO_REASON = 0
SOLD_OUT = 1
LIMIT_EXCEEDED = 2

REASONS = {NO_REASON: "", SOLD_OUT: "sold_out", LIMIT_EXCEEDED: "limit_exceeded"}


class MatchOrder(NamedTuple):
    """One order of a batch: a new order or a waiting ticket (which keeps its arrival)."""

    order_id: str
    sku: str
    qty: int
    tier: int
    arrival: int
    buyer: str


class Lot(NamedTuple):
    lot_id: str
    count: int  # type: ignore[assignment]  # shadows tuple.count; the kernel reads .count
    expires_at: int  # unix seconds; 0 = never


class SkuBook(NamedTuple):
    """A SKU's stock and policy as the batch sees it.

    allowances maps a buyer to the codes they may still get; None means the SKU has no
    per-buyer limit. A buyer missing from the map has the full `buyer_limit`.
    """

    lots: list[Lot]
    reject_when_sold_out: bool
    buyer_limit: int
    allowances: dict[str, int] | None


class Decision(NamedTuple):
    action: int  # FILL, QUEUE or REJECT
    reason: int  # NO_REASON, SOLD_OUT or LIMIT_EXCEEDED
    fills: list[tuple[str, int]]  # (lot_id, n), for FILL
