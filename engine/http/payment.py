"""The door's part of an order paid with coupons and points: check the coupons and price them
(offer), reserve coupons and points before the order is admitted (the saga's first step, on
the wallet's shard), and give them back when the admission did not take the order after all
(a full line, a wallet short of points). What the door cannot finish, the worker's sweep does
(engine/worker/settlement.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, NamedTuple

from aiohttp import web
from redis.exceptions import RedisError

from engine import errors, failpoints
from engine.clock import now_ms
from engine.http.state import DIRECTORY, INGEST
from engine.store import scripts
from engine.wallet import coupons, discounts, ledger
from engine.wire import OrderRequest, StreamOrder

log = logging.getLogger("kamigate.http")


class Offer(NamedTuple):
    """An order's coupons, checked: their ids in order and what they take off."""

    coupon_ids: tuple[str, ...] = ()
    discount: int = 0


NO_COUPONS = Offer()


async def offer(app: web.Application, storefront: str, req: OrderRequest, field: str = ""
                ) -> Offer:
    """Check the order's coupons as they are now and price them; 409 coupon_invalid with
    one `errors` entry per coupon that may not be used (422 for the list itself)."""
    if not req.coupons:
        return NO_COUPONS
    directory = app[DIRECTORY].current
    settings = directory.settings
    if len(req.coupons) > settings.coupons.max_per_order:
        raise errors.invalid(f"{field}coupons", f"at most {settings.coupons.max_per_order} "
                             "coupons in an order ([coupons] max_per_order)")
    if not ledger.valid_buyer(req.buyer):
        raise errors.invalid(f"{field}buyer", "paying with coupons needs a buyer id of 1-128 "
                             "visible ASCII characters")
    price = directory.skus[req.sku].price
    if price is None:
        raise errors.NotPriced(f"{field}coupons: SKU {req.sku!r} has no price")
    call = coupons.read_call(settings.redis.shards, storefront, req.buyer, req.coupons)
    found = await app[INGEST].script(call, _hashes)
    ids = [coupons.coupon_id(code) for code in req.coupons]
    terms = [discounts.terms_of(i, fields) for i, fields in zip(ids, found, strict=True)]
    total, problems = discounts.discount(terms, storefront, req.buyer, req.sku,
                                         price * req.qty, now_ms(), f"{field}coupons")
    if problems:
        raise errors.CouponInvalid(f"{len(problems)} of the order's coupons may not be used",
                                   errors=problems)
    return Offer(tuple(ids), total)


def _same(found: Any) -> Any:
    return found


def pipelined(app: web.Application) -> coupons.Run:
    """Script calls through the door's coalesced pipeline: a flood of them shares a few
    round trips instead of taking a pooled connection each."""
    ingest = app[INGEST]

    def run(call: scripts.Call) -> Awaitable[Any]:
        return ingest.script(call, _same)
    return run


def _hashes(found: Any) -> list[dict[bytes, bytes]]:
    return [dict(zip(flat[::2], flat[1::2], strict=True)) for flat in found]


def _taken(found: Any) -> tuple[str, int, str]:
    outcome = found[0].decode()
    return (outcome, int(found[1]), found[2].decode()) if outcome == "invalid" \
        else (outcome, 0, "")


async def reserve(app: web.Application, order: StreamOrder) -> tuple[int, Any] | None:
    """None when the order may go on (its coupons and points are reserved, now or by an
    earlier try of the same order id); else the answer: 409 coupon_invalid (a coupon was
    used meanwhile) or insufficient_points, with nothing left reserved."""
    shards = app[DIRECTORY].current.settings.redis.shards
    now = now_ms()
    if order.coupons:
        call = coupons.take_call(shards, order.storefront, order.buyer, order.order_id,
                                 order.coupons, now)
        outcome, index, why = await app[INGEST].script(call, _taken)
        if outcome == "invalid":
            return 409, errors.CouponInvalid("a coupon of the order was used meanwhile",
                                             errors=[errors.FieldError(f"coupons[{index - 1}]",
                                                                       why)])
    if order.points:
        call = ledger.reserve_call(shards, order.storefront, order.buyer, order.order_id,
                                   order.points, now)
        outcome, spendable = await app[INGEST].script(call, ledger.reserved)
        if outcome == "short":
            if order.coupons:
                await give_back(app, order)  # its coupons, reserved above
            return 409, errors.InsufficientPoints(
                f"the buyer has {spendable} points to spend, not {order.points}")
    if order.coupons or order.points:
        failpoints.hit("door.after_reserve")
    return None


async def give_back(app: web.Application, order: StreamOrder) -> None:
    """The order was not admitted (its line was full): its points and coupons go back at
    once."""
    if not order.points and not order.coupons:
        return
    shards = app[DIRECTORY].current.settings.redis.shards
    call = ledger.settle_call(shards, order.storefront, order.buyer, order.order_id, False,
                              now_ms(), order.coupons)
    try:
        # through the door's pipeline: a flood of refusals shares its round trips instead of
        # taking a pooled connection each (which ran the pool out and answered others 503)
        await pipelined(app)(call)
    except (RedisError, OSError) as exc:  # the sweep gives them back later
        log.warning("points of order %s not given back yet (%s)", order.order_id,
                    type(exc).__name__)
