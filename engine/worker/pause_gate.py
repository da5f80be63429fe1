"""The worker's side of a pause: before a batch is matched, its orders and tickets whose scope
is paused (for their tier) are set aside, to wait as paused tickets in their parked line.

The front door parks what it admits during a pause; this gate catches everything else that
would be issued in a paused scope: orders admitted just before the pause, overflow tickets
released into the stream, and the sold-out line run by an import or a hold given back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from engine.controls.pauses import PauseBoard, parked_ttl_ms
from engine.wire import StreamOrder
from engine.worker.matching_types import MatchOrder


class Parking(NamedTuple):
    """Where a set-aside order waits, and until when."""

    storefront: str
    expires_ms: int


def set_aside(board: PauseBoard, batch: Sequence[MatchOrder],
              requests: Mapping[str, StreamOrder], ttl_s: Mapping[str, float], now_ms: int
              ) -> tuple[list[MatchOrder], list[MatchOrder], dict[str, Parking]]:
    """(to match, to park, where each parked one waits). `requests`: every order of the
    batch by id; `ttl_s`: each SKU's queue_ttl_s (a parked ticket outlives its pause by it)."""
    if not board.in_force:
        return list(batch), [], {}
    kept: list[MatchOrder] = []
    parked: list[MatchOrder] = []
    parking: dict[str, Parking] = {}
    for order in batch:
        request = requests.get(order.order_id)
        storefront = request.storefront if request is not None else ""
        pause = board.lookup(storefront, order.sku, order.tier)
        if pause is None:
            kept.append(order)
            continue
        parked.append(order)
        ttl_ms = int(ttl_s.get(order.sku, 1800) * 1000)
        parking[order.order_id] = Parking(
            storefront, now_ms + parked_ttl_ms(ttl_ms, pause.ends_ms(), now_ms))
    return kept, parked, parking
