"""The door's part of an order paid with points: reserve them before the order is admitted
(the saga's first step, on the wallet's shard), and give them back when the admission did not
take the order after all (a full line). What the door cannot finish, the worker's sweep does
(engine/worker/settlement.py)."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from engine import errors, failpoints
from engine.clock import now_ms
from engine.http.state import DIRECTORY, INGEST, REDIS
from engine.wallet import ledger
from engine.wire import StreamOrder

log = logging.getLogger("kamigate.http")


async def reserve(app: web.Application, order: StreamOrder) -> tuple[int, Any] | None:
    """None when the order may go on (its points are reserved, now or by an earlier try of
    the same order id); else the answer: 409 insufficient_points, nothing written."""
    if not order.points:
        return None
    shards = app[DIRECTORY].current.settings.redis.shards
    call = ledger.reserve_call(shards, order.storefront, order.buyer, order.order_id,
                               order.points, now_ms())
    outcome, spendable = await app[INGEST].script(call, ledger.reserved)
    if outcome == "short":
        return 409, errors.InsufficientPoints(
            f"the buyer has {spendable} points to spend, not {order.points}")
    failpoints.hit("door.after_reserve")
    return None


async def give_back(app: web.Application, order: StreamOrder) -> None:
    """The order was not admitted (its line was full): its points go back at once."""
    if not order.points:
        return
    shards = app[DIRECTORY].current.settings.redis.shards
    try:
        await ledger.settle(app[REDIS], shards, order.storefront, order.buyer, order.order_id,
                            False, now_ms())
    except (RedisError, OSError) as exc:  # the sweep gives them back later
        log.warning("points of order %s not given back yet (%s)", order.order_id,
                    type(exc).__name__)
