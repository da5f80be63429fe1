"""A buyer's points at the storefront that asks (storefront key): the wallet, grants and
deductions, the history. Another storefront never sees it (C6): the wallet is per storefront."""

from __future__ import annotations

import hashlib
import re
import time

from aiohttp import web

from engine import errors
from engine.clock import now_ms, parse_rfc3339
from engine.http.auth import storefront_of
from engine.http.codec import decode_body, respond
from engine.http.fields import buyer_of, idempotency_key
from engine.http.state import ADMISSION, DIRECTORY, REDIS
from engine.wallet import ledger
from engine.wire import msgpack_encode
from engine.wire_wallet import POINTS_REQUEST, LedgerPage, PointsMoved

DAY_MS = 86_400_000
_CURSOR = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def _buyer(request: web.Request) -> str:
    buyer = buyer_of(request)
    if not request.app[DIRECTORY].current.settings.points.enabled:
        raise errors.NotFound("points are not enabled here ([points])")
    return buyer


async def get_points(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    buyer = _buyer(request)
    points = directory.settings.points
    wallet = await ledger.view(request.app[REDIS], directory.settings.redis.shards,
                               storefront.id, buyer, now_ms(), points.remind_before_days * DAY_MS)
    return respond(request, wallet)


async def move_points(request: web.Request) -> web.Response:
    """A grant (points > 0: a new lot) or a deduction (points < 0: never below zero)."""
    app = request.app
    directory = app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    buyer = _buyer(request)
    body = await decode_body(request, POINTS_REQUEST)
    settings = directory.settings
    if body.points == 0:
        raise errors.invalid("points", "must not be 0 (> 0 grants, < 0 deducts)")
    now = now_ms()
    expires_ms = 0
    if body.expires_at is not None:
        try:
            expires_ms = parse_rfc3339(body.expires_at)
        except ValueError as exc:
            raise errors.invalid("expires_at", str(exc)) from None
        if expires_ms <= now or body.points < 0:
            raise errors.invalid("expires_at", "a grant's lot expires in the future")
    elif settings.points.expire_after_days:
        expires_ms = now + settings.points.expire_after_days * DAY_MS
    key = idempotency_key(request)
    if body.points > 0:
        wait = app[ADMISSION].current.points_wait(time.monotonic(), storefront.id, buyer,
                                                  body.points)
        if wait:
            raise errors.RateLimited("over this buyer's grants_per_minute; retry later",
                                     retry_after=max(1, int(wait + 0.999)))
    digest = hashlib.sha256(msgpack_encode(body)).hexdigest()
    outcome, entry, balance = await ledger.move(
        app[REDIS], settings.redis.shards, storefront.id, buyer, body.points, "grant",
        body.reason, expires_ms, now, key, digest,
        tell=ledger.notice(settings, storefront.id, buyer))
    if outcome == "conflict":
        raise errors.IdempotencyConflict("this Idempotency-Key was used with a different body")
    if outcome == "short":
        raise errors.InsufficientPoints(
            f"the wallet has {balance} points to deduct from, not {-body.points}")
    headers = {"Idempotent-Replayed": "true"} if outcome == "replay" else None
    return respond(request, PointsMoved(entry_id=entry, balance=balance), status=201,
                   headers=headers)


async def points_history(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    buyer = _buyer(request)
    cursor = request.query.get("cursor") or None
    if cursor is not None and not _CURSOR.fullmatch(cursor):
        raise errors.invalid("cursor", "the next_cursor of an earlier page")
    try:
        limit = int(request.query.get("limit") or 50)
    except ValueError:
        raise errors.invalid("limit", "a whole number from 1 to 200") from None
    if not 1 <= limit <= ledger.MAX_PAGE:
        raise errors.invalid("limit", "a whole number from 1 to 200")
    entries, more = await ledger.history(request.app[REDIS], directory.settings.redis.shards,
                                         storefront.id, buyer, cursor, limit)
    return respond(request, LedgerPage(entries=entries, next_cursor=more))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/buyers/{buyer}/points", get_points),
        web.post("/v1/buyers/{buyer}/points", move_points),
        web.get("/v1/buyers/{buyer}/points/history", points_history),
    ]
