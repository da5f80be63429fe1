"""Order routes (storefront key): create, batch, read, confirm, cancel."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from engine import errors
from engine.clock import now_ms
from engine.config.directory import Directory
from engine.config.settings import Storefront
from engine.controls.destinations import refusal
from engine.http import payment
from engine.http.auth import storefront_of
from engine.http.codec import decode_body, respond, route
from engine.http.incoming import Answer, Incoming
from engine.http.notices import announce_pause, waits_behind, with_notice
from engine.http.placement import Placement, placement
from engine.http.placing import place, place_many, replay_of
from engine.http.state import ADMISSION, DIRECTORY, DRAIN, REDIS
from engine.store import records
from engine.views import record_view
from engine.wallet import ledger
from engine.wallet.pricing import quote
from engine.wire import (
    BATCH_REQUEST,
    MAX_METADATA_BYTES,
    ORDER_REQUEST,
    Order,
    OrderRecord,
    OrderRequest,
    msgpack_encode,
)
from engine.worker.waiting import confirm, unwind


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _check(directory: Directory, storefront: Storefront, req: OrderRequest,
           field: str = "") -> None:
    sku = directory.skus.get(req.sku)
    if sku is None:
        raise errors.UnknownSku(f"no SKU {req.sku!r} is configured")
    if req.qty > sku.max_qty:
        raise errors.invalid(f"{field}qty", f"must be between 1 and {sku.max_qty}")
    if req.buyer_ip is not None and not _is_ip(req.buyer_ip):
        raise errors.invalid(f"{field}buyer_ip", "must be an IPv4 or IPv6 address")
    if req.hold_s > directory.settings.orders.max_hold_s:
        raise errors.invalid(
            f"{field}hold_s", f"must be at most {directory.settings.orders.max_hold_s}"
        )
    if req.metadata is not None and len(msgpack_encode(req.metadata)) > MAX_METADATA_BYTES:
        raise errors.invalid(f"{field}metadata", "must be at most 2 KiB encoded")
    quote(directory.settings.points, sku, req, field)
    if req.points and not ledger.valid_buyer(req.buyer):
        raise errors.invalid(f"{field}buyer", "paying with points needs a buyer id of 1-128 "
                             "visible ASCII characters")
    if req.notify_url is not None:
        why = refusal(req.notify_url, directory.settings.webhooks.allow_private,
                      storefront.notify_hosts)
        if why is not None:
            raise errors.invalid(f"{field}notify_url", why)


def _answer(status: int, body: Any, headers: Mapping[str, str]) -> Answer:
    # `headers` may be the one dict every unlimited answer shares: never written to
    if isinstance(body, errors.Problem):
        body.extra_headers = dict(headers)
        raise body
    if status == 200:
        headers = {**headers, "Idempotent-Replayed": "true"}
    return Answer(status, body, with_notice(body, headers))


async def create_order(request: Incoming) -> Answer:
    app = request.app
    directory = app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    req = await decode_body(request, ORDER_REQUEST)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (1 <= len(key) <= 128 and key.isascii() and key.isprintable()
                                and " " not in key):
        raise errors.invalid("Idempotency-Key", "must be 1-128 visible ASCII characters")
    try:
        _check(directory, storefront, req)
    except errors.Problem:
        # a retry of an order admitted under older rules is still a replay (C5)
        replayed = await replay_of(app, storefront, req, key) if key is not None else None
        if replayed is None:
            raise
        return _answer(*replayed, app[ADMISSION].current.policy_headers(storefront.id))
    try:
        offer = await payment.offer(app, storefront.id, req)
    except errors.CouponInvalid:
        # a retry of an order that reserved its coupons is a replay
        replayed = await replay_of(app, storefront, req, key) if key is not None else None
        if replayed is None:
            raise
        return _answer(*replayed, app[ADMISSION].current.policy_headers(storefront.id))
    p = placement(app, storefront, req, key, offer)
    wait_ms = directory.settings.orders.default_wait_ms if req.wait_ms is None else req.wait_ms
    status, body = await place(app, p, wait_ms)
    return _answer(status, body, p.gate.headers())


async def create_batch(request: Incoming) -> Answer:
    app = request.app
    directory = app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    batch = await decode_body(request, BATCH_REQUEST)
    results: list[Any] = [None] * len(batch.orders)
    pending: list[tuple[int, Placement]] = []
    deadline_ms = max(
        (o.wait_ms for o in batch.orders if o.wait_ms is not None),
        default=directory.settings.orders.default_wait_ms,
    )
    for i, item in enumerate(batch.orders):
        try:
            _check(directory, storefront, item, f"orders[{i}].")
            offer = await payment.offer(app, storefront.id, item, f"orders[{i}].")
            p = placement(app, storefront, item, item.idempotency_key, offer)
        except errors.Problem as problem:
            results[i] = problem.body()
            continue
        pending.append((i, p))
    answers = await place_many(app, [p for _, p in pending], deadline_ms)
    for (i, _), (_, body) in zip(pending, answers, strict=True):
        results[i] = body.body() if isinstance(body, errors.Problem) else body
    return Answer(200, {"results": results}, app[ADMISSION].current.policy_headers(storefront.id))


async def _own_record(request: Incoming) -> tuple[Directory, OrderRecord]:
    directory = request.app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    order_id = request.match_info["order_id"]
    record = await records.read_to_show(request.app[REDIS], order_id)
    if record is None or record.request.storefront != storefront.id:
        raise errors.NotFound(f"no order {order_id}")
    return directory, record


async def get_order(request: Incoming) -> Answer:
    directory, record = await _own_record(request)
    position = await records.position(request.app[REDIS], record)
    req = record.request
    view = announce_pause(request.app, record_view(
        directory, record, position, request.app[DRAIN],
        waits_behind(request.app, req.storefront, req.sku, req.tier, record.reason), now_ms()),
        req.storefront)
    return Answer(200, view, with_notice(view, {}))


async def cancel_order(request: web.Request) -> web.Response:
    directory, record = await _own_record(request)
    redis = request.app[REDIS]
    order_id = record.request.order_id
    before, after = await unwind(redis, record, "cancel", now_ms())
    if after != "cancelled":
        raise errors.NotCancellable(f"order {order_id} is {before}", order_id=order_id)
    fresh = await records.read_to_show(redis, order_id)
    assert fresh is not None
    return respond(request, record_view(directory, fresh, None))


async def confirm_order(request: web.Request) -> web.Response:
    directory, record = await _own_record(request)
    redis = request.app[REDIS]
    req = record.request
    after = await confirm(redis, record, now_ms())
    if after == "recalled":
        raise errors.Recalled(f"order {req.order_id}: its codes were recalled and none are "
                              "left to replace them; it is cancelled", order_id=req.order_id)
    if after != "confirmed":
        raise errors.NotHeld(f"order {req.order_id} is not held", order_id=req.order_id)
    fresh = await records.read_to_show(redis, req.order_id)
    assert fresh is not None
    return respond(request, record_view(directory, fresh, None))


ORDER_ID = "o_[0-9a-f]{20}"
# served by the lean door too (engine.http.lean): (method, aiohttp's route name) -> route
LEAN_ROUTES = {
    ("POST", "/v1/orders"): create_order,
    ("POST", "/v1/orders/batch"): create_batch,
    ("GET", "/v1/orders/{order_id}"): get_order,
}


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/orders", route(create_order)),
        web.post("/v1/orders/batch", route(create_batch)),
        # an order id's shape: "/v1/orders/batch" is not one
        web.get(f"/v1/orders/{{order_id:{ORDER_ID}}}", route(get_order)),
        web.delete(f"/v1/orders/{{order_id:{ORDER_ID}}}", cancel_order),
        web.post(f"/v1/orders/{{order_id:{ORDER_ID}}}/confirm", confirm_order),
    ]


__all__ = ["Order", "routes"]
