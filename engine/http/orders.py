"""Order routes (storefront key): create, batch, read, confirm, cancel."""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import msgspec
from aiohttp import web

from engine import errors, keys, records, scripts
from engine.clock import now_ms
from engine.config import Storefront, is_ip
from engine.directory import Directory
from engine.http.auth import storefront_of
from engine.http.codec import decode_body, encode_body
from engine.http.render import order_view, record_view
from engine.http.state import DIRECTORY, INGEST, METRICS, REDIS, REPLIES
from engine.wire import (
    MAX_METADATA_BYTES,
    BatchItem,
    Order,
    OrderRequest,
    Reply,
    StreamOrder,
    decode_batch,
    decode_batch_msgpack,
    decode_order_request,
    decode_order_request_msgpack,
    msgpack_encode,
)

STATUS_HTTP = {"fulfilled": 201, "held": 201, "queued": 202, "pending": 202}


class Admission(msgspec.Struct):
    """One validated order about to be admitted (or replayed)."""

    order: StreamOrder
    shard: int
    idempotency_key: str | None
    digest: str


def _check(directory: Directory, req: OrderRequest, field: str = "") -> None:
    sku = directory.skus.get(req.sku)
    if sku is None:
        raise errors.UnknownSku(f"no SKU {req.sku!r} is configured")
    if req.qty > sku.max_qty:
        raise errors.invalid(f"{field}qty", f"must be between 1 and {sku.max_qty}")
    if req.buyer_ip is not None and not is_ip(req.buyer_ip):
        raise errors.invalid(f"{field}buyer_ip", "must be an IPv4 or IPv6 address")
    if req.hold_s > directory.settings.orders.max_hold_s:
        raise errors.invalid(
            f"{field}hold_s", f"must be at most {directory.settings.orders.max_hold_s}"
        )
    if req.metadata is not None and len(msgpack_encode(req.metadata)) > MAX_METADATA_BYTES:
        raise errors.invalid(f"{field}metadata", "must be at most 2 KiB encoded")


def _admission(
    directory: Directory, storefront: Storefront, req: OrderRequest, key: str | None,
    reply_to: str,
) -> Admission:
    shard = directory.shard_by_sku[req.sku]
    order = StreamOrder(
        order_id=keys.new_order_id(shard),
        storefront=storefront.id,
        sku=req.sku,
        qty=req.qty,
        buyer=req.buyer,
        tier=req.tier,
        created_ms=now_ms(),
        reply_to=reply_to,
        buyer_ip=req.buyer_ip or "",
        hold_s=req.hold_s,
        notify_url=req.notify_url or "",
        metadata=req.metadata,
    )
    digest = ""
    if key is not None:
        canonical = msgspec.structs.replace(req, wait_ms=None)
        if isinstance(canonical, BatchItem):
            canonical = msgspec.structs.replace(canonical, idempotency_key=None)
        digest = hashlib.sha256(msgpack_encode(canonical)).hexdigest()
    return Admission(order, shard, key, digest)


async def _admit(app: web.Application, adm: Admission, wait_ms: int) -> tuple[int, Any]:
    """Admit (or replay) one order; (HTTP status, Order or Problem)."""
    ingest, hub, directory = app[INGEST], app[REPLIES], app[DIRECTORY].current
    order = adm.order
    again = False
    if adm.idempotency_key is not None:
        held = await ingest.reserve_key(
            order.storefront, adm.idempotency_key, order.order_id, adm.digest
        )
        if not held.created:
            if held.digest != adm.digest:
                return 409, errors.IdempotencyConflict(
                    "this Idempotency-Key was used with a different body",
                    order_id=held.order_id,
                )
            record = await records.read(app[REDIS], held.order_id)
            if record is not None:
                position = await records.position(app[REDIS], record)
                return 200, record_view(directory, record, position)
            # The key was reserved but the order never reached the stream (the process
            # that reserved it died): admit it now under the reserved id.
            order = adm.order = msgspec.structs.replace(order, order_id=held.order_id)
            again = True
    if wait_ms > 0 and not again:
        # The common path awaits once: the worker's reply implies the admission succeeded,
        # and a failed admission is passed on to the same future.
        waiter = hub.expect(order.order_id)
        admitted = ingest.admit(order, adm.shard)
        admitted.add_done_callback(functools.partial(_pass_failure, waiter))
        reply = await hub.wait(order.order_id, waiter, wait_ms)
        app[METRICS].admitted.inc()
        return _answer(directory, order, reply)
    future = hub.expect(order.order_id) if wait_ms > 0 else None
    try:
        status = await ingest.admit(order, adm.shard, again)
    except BaseException:
        hub.forget(order.order_id)
        raise
    app[METRICS].admitted.inc()
    if status != "pending":
        hub.forget(order.order_id)
        record = await records.read(app[REDIS], order.order_id)
        if record is None:
            raise errors.Internal("admitted order has no record")
        return 200, record_view(directory, record, await records.position(app[REDIS], record))
    reply = await hub.wait(order.order_id, future, wait_ms) if future is not None else None
    return _answer(directory, order, reply)


def _pass_failure(future: asyncio.Future[Reply | None], admitted: asyncio.Future[str]) -> None:
    if not future.done() and not admitted.cancelled() and admitted.exception() is not None:
        future.set_exception(admitted.exception())  # type: ignore[arg-type]


def _answer(directory: Directory, order: StreamOrder, reply: Reply | None) -> tuple[int, Any]:
    if reply is None:
        return 202, order_view(directory, order, status="pending",
                               created_ms=order.created_ms, updated_ms=order.created_ms)
    view = order_view(
        directory, order, status=reply.status, created_ms=order.created_ms,
        updated_ms=reply.updated_ms, codes=reply.codes, reason=reply.reason,
        position=reply.position, expires_ms=reply.expires_ms,
    )
    if reply.status == "rejected":
        problem = errors.BY_REASON.get(reply.reason, errors.SoldOut)
        return problem.status, problem(
            f"order {order.order_id} was rejected: {reply.reason}", order_id=order.order_id
        )
    return STATUS_HTTP.get(reply.status, 200), view


def _respond(request: web.Request, status: int, body: Any, replayed: bool) -> web.Response:
    if isinstance(body, errors.Problem):
        raise body
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    payload, ctype = encode_body(request, body)
    return web.Response(body=payload, status=status, content_type=ctype, headers=headers)


async def create_order(request: web.Request) -> web.Response:
    app = request.app
    directory = app[DIRECTORY].current
    storefront = storefront_of(request, directory)
    req = await decode_body(request, decode_order_request, decode_order_request_msgpack)
    _check(directory, req)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 128 and key.isascii() and key.isprintable()
                                and " " not in key):
        raise errors.invalid("Idempotency-Key", "must be 1-128 visible ASCII characters")
    adm = _admission(directory, storefront, req, key, app[REPLIES].channel)
    wait_ms = directory.settings.orders.default_wait_ms if req.wait_ms is None else req.wait_ms
    status, body = await _admit(app, adm, wait_ms)
    return _respond(request, status, body, replayed=status == 200)


async def create_batch(request: web.Request) -> web.Response:
    app = request.app
    directory = app[DIRECTORY].current
    storefront = storefront_of(request, directory)
    batch = await decode_body(request, decode_batch, decode_batch_msgpack)
    results: list[Any] = [None] * len(batch.orders)
    pending: list[tuple[int, Admission, int]] = []
    deadline_ms = max(
        (o.wait_ms for o in batch.orders if o.wait_ms is not None),
        default=directory.settings.orders.default_wait_ms,
    )
    for i, item in enumerate(batch.orders):
        try:
            _check(directory, item, f"orders[{i}].")
        except errors.Problem as problem:
            results[i] = problem.body()
            continue
        adm = _admission(directory, storefront, item, item.idempotency_key, app[REPLIES].channel)
        pending.append((i, adm, deadline_ms))
    answers = await asyncio.gather(*(_admit(app, adm, wait) for _, adm, wait in pending))
    for (i, _, _), (_, body) in zip(pending, answers, strict=True):
        results[i] = body.body() if isinstance(body, errors.Problem) else body
    payload, ctype = encode_body(request, {"results": results})
    return web.Response(body=payload, status=200, content_type=ctype)


async def _own_record(request: web.Request) -> tuple[Directory, records.OrderRecord]:
    directory = request.app[DIRECTORY].current
    storefront = storefront_of(request, directory)
    order_id = request.match_info["order_id"]
    record = await records.read(request.app[REDIS], order_id)
    if record is None or record.request.storefront != storefront.id:
        raise errors.NotFound(f"no order {order_id}")
    return directory, record


async def get_order(request: web.Request) -> web.Response:
    directory, record = await _own_record(request)
    position = await records.position(request.app[REDIS], record)
    payload, ctype = encode_body(request, record_view(directory, record, position))
    return web.Response(body=payload, status=200, content_type=ctype)


async def cancel_order(request: web.Request) -> web.Response:
    directory, record = await _own_record(request)
    redis = request.app[REDIS]
    req = record.request
    shard = keys.shard_of_order(req.order_id)
    assert shard is not None
    lot_keys = [keys.lot_codes(req.sku, lot, shard) for lot in await _held_lots(redis, req, shard)]
    before, after = await scripts.CANCEL(
        redis,
        [keys.order(req.order_id, shard), keys.line(req.sku, shard),
         keys.sku_counts(req.sku, shard), keys.lots(req.sku, shard),
         keys.bought(req.sku, shard), keys.stream(shard), *lot_keys],
        [now_ms(), req.sku, req.buyer, req.qty, req.order_id],
    )
    if after != b"cancelled":
        raise errors.NotCancellable(
            f"order {req.order_id} is {before.decode()}", order_id=req.order_id
        )
    fresh = await records.read(redis, req.order_id)
    assert fresh is not None
    payload, ctype = encode_body(request, record_view(directory, fresh, None))
    return web.Response(body=payload, status=200, content_type=ctype)


async def _held_lots(redis: Any, req: StreamOrder, shard: int) -> list[str]:
    raw = await redis.hget(keys.order(req.order_id, shard), "lots")
    if not raw:
        return []
    return [str(lot) for lot, _ in msgspec.msgpack.decode(raw)]


async def confirm_order(request: web.Request) -> web.Response:
    directory, record = await _own_record(request)
    redis = request.app[REDIS]
    req = record.request
    shard = keys.shard_of_order(req.order_id)
    assert shard is not None
    after = await scripts.CONFIRM(
        redis, [keys.order(req.order_id, shard), keys.sku_counts(req.sku, shard)],
        [now_ms(), req.qty],
    )
    if after != b"confirmed":
        raise errors.NotHeld(f"order {req.order_id} is not held", order_id=req.order_id)
    fresh = await records.read(redis, req.order_id)
    assert fresh is not None
    payload, ctype = encode_body(request, record_view(directory, fresh, None))
    return web.Response(body=payload, status=200, content_type=ctype)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/orders", create_order),
        web.post("/v1/orders/batch", create_batch),
        web.get("/v1/orders/{order_id}", get_order),
        web.delete("/v1/orders/{order_id}", cancel_order),
        web.post("/v1/orders/{order_id}/confirm", confirm_order),
    ]


__all__ = ["Order", "routes"]
