"""Placing validated orders: idempotency, admission to the stream or the overflow line, and
waiting for the worker's outcome. One at a time (the single route) or many together (batch)."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import msgspec
from aiohttp import web

from engine import errors, failpoints
from engine.clock import now_ms
from engine.config.settings import Storefront
from engine.door.ingest import Admitted
from engine.http import payment
from engine.http.guards import SURGE
from engine.http.notices import announce_pause, waits_behind
from engine.http.placement import Placement, request_digest
from engine.http.state import (
    DIRECTORY,
    DRAIN,
    INGEST,
    METRICS,
    REDIS,
    REPLIES,
)
from engine.store import keys, records
from engine.views import order_view, record_view
from engine.wire import (
    OrderRequest,
    Reply,
    StreamOrder,
)

# what an admit of a new order can answer
ADMIT_ANSWERS = ("pending", "queued", "full", "abandoned")
STATUS_HTTP = {"fulfilled": 201, "held": 201, "queued": 202, "pending": 202}


async def replay_of(app: web.Application, storefront: Storefront, req: OrderRequest,
                    key: str) -> tuple[int, Any] | None:
    """The order an Idempotency-Key already holds for this same body, or None. Lets a retry
    succeed even when the rules changed since (e.g. a lower max_qty): C5."""
    directory = app[DIRECTORY].current
    shard = keys.shard_of_idempotency(storefront.id, key, directory.settings.redis.shards)
    held: Any = await app[REDIS].hmget(keys.idempotency(shard, storefront.id, key), "o", "h")
    if not held[0] or held[1].decode() != request_digest(req):
        return None
    record = await records.read_to_show(app[REDIS], held[0].decode())
    if record is None:
        return None
    position = await records.position(app[REDIS], record)
    return 200, record_view(directory, record, position, app[DRAIN], None, now_ms())


async def place(app: web.Application, p: Placement, wait_ms: int) -> tuple[int, Any]:
    """Admit (or replay) one order; (HTTP status, Order or Problem)."""
    ingest, hub, directory = app[INGEST], app[REPLIES], app[DIRECTORY].current
    order = p.order
    if p.overflow and not directory.settings.waiting_room.enabled:
        return 429, _full(p)
    if p.idempotency_key is not None:
        held = await ingest.reserve_key(order.storefront, p.idempotency_key, order.order_id,
                                        p.digest)
        if not held.created:
            if held.digest != p.digest:
                return 409, errors.IdempotencyConflict(
                    "this Idempotency-Key was used with a different body", order_id=held.order_id
                )
            record = await records.read_to_show(app[REDIS], held.order_id)
            if record is not None:
                position = await records.position(app[REDIS], record)
                return 200, record_view(directory, record, position, app[DRAIN], p.pause,
                                        now_ms())
            # The key was reserved but the order never reached Redis (the process that
            # reserved it died): admit it now under the reserved id.
            p.order = msgspec.structs.replace(order, order_id=held.order_id)
            return await _admit_again(app, p)
    refused = await payment.reserve(app, order)
    if refused is not None:
        return refused
    admitted, waiter = _start(app, p, wait_ms)
    if waiter is None:
        result = await admitted
        failpoints.hit("door.after_admit")
        app[METRICS].door.admitted += 1
        return await _answer_paid(app, p, _settled(p, admitted=result))
    reply = await hub.wait(order.order_id, waiter, wait_ms)
    failpoints.hit("door.after_admit")
    app[METRICS].door.admitted += 1
    return await _answer_paid(app, p, _settled(p, reply=reply))


async def _answer_paid(app: web.Application, p: Placement, reply: Reply) -> tuple[int, Any]:
    """_answer, and the order's points back when it was not admitted after all (its line had
    no room for it, or the sweep fenced it and gave them back already: then a no-op)."""
    if reply.status in ("full", "abandoned"):
        await payment.give_back(app, p.order)
    return _answer(app, p, reply)


def _start(app: web.Application, p: Placement, wait_ms: int
           ) -> tuple[asyncio.Future[Admitted], asyncio.Future[Reply | None] | None]:
    """Send one order to admission and, when the caller waits, expect the worker's reply.

    One await per order: the worker's reply implies the admission succeeded, and a failed
    admission, a ticket or a full line is relayed to the same reply future.
    """
    order = p.order
    waiter = app[REPLIES].expect(order.order_id) if wait_ms > 0 else None
    # With a key, a racing request of the same key may have admitted this very order id
    # already (it found the key reserved and no record yet): admit.lua looks first.
    admitted = app[INGEST].admit(order, p.shard, ticket=p.ticket, ttl_ms=p.ttl_ms, why=p.why,
                                 review=p.review)
    if waiter is not None:
        admitted.add_done_callback(functools.partial(_relay, waiter, order, p))
    return admitted, waiter


def _settled(p: Placement, admitted: Admitted | None = None, reply: Reply | None = None
             ) -> Reply:
    """What to answer once the admission (and the wait, if any) is over: the worker's reply,
    else what the admission said (pending when a racing request admitted this id first, or
    when the wait ran out)."""
    if reply is not None:
        return reply
    if admitted is None or admitted.status not in ADMIT_ANSWERS:
        admitted = Admitted("pending")
    return _reply_of(p.order, p, admitted)


async def place_many(app: web.Application, placements: list[Placement], wait_ms: int
                     ) -> list[tuple[int, Any]]:
    """Admit many orders at once (the batch route) and wait for them together: one deadline
    and no task per order. An order with an Idempotency-Key takes place()'s path."""
    keyed = [i for i, p in enumerate(placements) if p.idempotency_key is not None]
    unkeyed = [i for i, p in enumerate(placements) if p.idempotency_key is None]
    answers: list[tuple[int, Any]] = [(0, None)] * len(placements)
    if keyed:
        mine, theirs = await asyncio.gather(
            _place_unkeyed(app, [placements[i] for i in unkeyed], wait_ms),
            asyncio.gather(*(place(app, placements[i], wait_ms) for i in keyed)),
        )
    else:
        mine, theirs = await _place_unkeyed(app, placements, wait_ms), []
    for i, answer in zip(unkeyed, mine, strict=True):
        answers[i] = answer
    for i, answer in zip(keyed, theirs, strict=True):
        answers[i] = answer
    return answers


async def _place_unkeyed(app: web.Application, placements: list[Placement], wait_ms: int
                         ) -> list[tuple[int, Any]]:
    room = app[DIRECTORY].current.settings.waiting_room.enabled
    answers: list[tuple[int, Any] | None] = [None] * len(placements)
    admits: dict[int, asyncio.Future[Admitted]] = {}
    waiters: dict[str, asyncio.Future[Reply | None]] = {}
    paying = [i for i, p in enumerate(placements)
              if (p.order.points or p.order.coupons) and not (p.overflow and not room)]
    for i, refused in zip(paying, await asyncio.gather(
            *(payment.reserve(app, placements[i].order) for i in paying)), strict=True):
        answers[i] = refused  # 409 coupon_invalid or insufficient_points; None: reserved
    for i, p in enumerate(placements):
        if answers[i] is not None:
            continue
        if p.overflow and not room:
            answers[i] = (429, _full(p))
            continue
        admitted, waiter = _start(app, p, wait_ms)
        if waiter is None:
            admits[i] = admitted
        else:
            waiters[p.order.order_id] = waiter
    if admits:
        await asyncio.gather(*admits.values())
    await app[REPLIES].wait_many(waiters, wait_ms)
    # every failure is looked at (none is left "never retrieved"); the first one is raised
    failures = [f.exception() for f in waiters.values()]
    failure = next((exc for exc in failures if exc is not None), None)
    if failure is not None:
        raise failure
    failpoints.hit("door.after_admit")
    app[METRICS].door.admitted += len(admits) + len(waiters)
    done: list[tuple[int, Any]] = []
    for i, p in enumerate(placements):
        answer = answers[i]
        if answer is None:
            in_line = admits.get(i)
            answer = await _answer_paid(
                app, p, _settled(p, admitted=in_line.result()) if in_line else
                _settled(p, reply=waiters[p.order.order_id].result()))
        done.append(answer)
    return done


async def _admit_again(app: web.Application, p: Placement) -> tuple[int, Any]:
    directory = app[DIRECTORY].current
    refused = await payment.reserve(app, p.order)  # idempotent per order id
    if refused is not None:
        return refused
    admitted = await app[INGEST].admit(p.order, p.shard, ticket=p.ticket, ttl_ms=p.ttl_ms,
                                       why=p.why, review=p.review)
    if admitted.status in ADMIT_ANSWERS:
        return await _answer_paid(app, p, _reply_of(p.order, p, admitted))
    record = await records.read_to_show(app[REDIS], p.order.order_id)
    if record is None:
        raise errors.Internal("admitted order has no record")
    return 200, record_view(directory, record, await records.position(app[REDIS], record))


def _reply_of(order: StreamOrder, p: Placement, admitted: Admitted) -> Reply:
    expires = order.created_ms + p.ttl_ms if admitted.status == "queued" else 0
    return Reply(order.order_id, admitted.status, order.created_ms, [], p.why,
                 admitted.position, expires)


def _relay(waiter: asyncio.Future[Reply | None], order: StreamOrder, p: Placement,
           admitted: asyncio.Future[Admitted]) -> None:
    if admitted.cancelled():
        return
    failure = admitted.exception()  # read even when nobody waits any more: never "unretrieved"
    if waiter.done():
        return
    if failure is not None:
        waiter.set_exception(failure)
    elif admitted.result().status in ("queued", "full", "abandoned"):
        waiter.set_result(_reply_of(order, p, admitted.result()))


SURGE_NOTICE = "demand is far above usual right now: your order may take longer than its ETA"


def _full(p: Placement) -> errors.Problem:
    return errors.RateLimited(
        "over capacity and the waiting line is full; retry later",
        retry_after=int(p.gate.headers().get("Retry-After", "1")),
    )


def _answer(app: web.Application, p: Placement, reply: Reply) -> tuple[int, Any]:
    order = p.order
    directory = app[DIRECTORY].current
    if reply.status == "full":
        return 429, _full(p)
    if reply.status == "abandoned":
        return 409, errors.OrderAbandoned(
            f"order {order.order_id} was not admitted in time and its points were given "
            "back; send it again with a new Idempotency-Key", order_id=order.order_id)
    if reply.status == "rejected":
        problem = errors.BY_REASON.get(reply.reason, errors.SoldOut)
        return problem.status, problem(
            f"order {order.order_id} was rejected: {reply.reason}", order_id=order.order_id
        )
    view = order_view(
        directory, order, status=reply.status, created_ms=order.created_ms,
        updated_ms=reply.updated_ms, codes=reply.codes, reason=reply.reason,
        position=reply.position, expires_ms=reply.expires_ms, drain=app[DRAIN],
        # parked by the worker (the pause began after the door let it through)
        pause=p.pause or waits_behind(app, order.storefront, order.sku, order.tier,
                                      reply.reason),
        now_ms=order.created_ms,
    )
    if reply.status == "queued" and view.notice is None and app[SURGE].surging(order.sku):
        view.notice = SURGE_NOTICE  # its ETA is what the line moves at now; a surge slows it
    return STATUS_HTTP.get(reply.status, 200), announce_pause(app, view, order.storefront)
