"""Operators' routes for delivery: pause and resume (per scope), the pause list and holiday
calendar, and manual review of held-back orders."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec
from aiohttp import web

from engine import errors
from engine.clock import parse_rfc3339
from engine.controls import pauses
from engine.controls.calendars import MAX_SPAN, holiday_blocks, windows
from engine.http.auth import admin_of
from engine.http.codec import decode_body, respond
from engine.http.state import DIRECTORY, PAUSES, REDIS
from engine.store import audit
from engine.views import record_view
from engine.wire import PAUSE_REQUEST, RESUME_REQUEST, REVIEW_DECISION
from engine.worker import parking

FIRST_YEAR, LAST_YEAR = 1900, 2200
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z  # what a holiday calendar can sensibly answer


def _check_scope(request: web.Request, scope: str) -> None:
    directory = request.app[DIRECTORY].current
    kind, _, name = scope.partition(":")
    known = scope == "global" or (kind == "sku" and name in directory.skus) or (
        kind == "storefront" and name in {s.id for s in directory.settings.storefronts})
    if not known:
        raise errors.invalid("scope", f"{scope!r} is not 'global', a configured "
                                      "'storefront:<id>' or 'sku:<id>'")


async def pause(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    body = await decode_body(request, PAUSE_REQUEST)
    _check_scope(request, body.scope)
    if body.until is not None:
        try:
            until_ms = parse_rfc3339(body.until)
        except ValueError as exc:
            raise errors.invalid("until", str(exc)) from None
        now_ms = datetime.now(UTC).timestamp() * 1000
        if until_ms <= now_ms:
            raise errors.invalid("until", "must be in the future")
        if until_ms > now_ms + MAX_SPAN.total_seconds() * 1000:
            raise errors.invalid("until", f"must be within {MAX_SPAN.days} days")
    redis = request.app[REDIS]
    entry = await pauses.pause(redis, body.scope, body.reason, body.until, body.action, who.id,
                               tuple(sorted(set(body.exempt_tiers))))
    await _refresh(request)
    await audit.record(redis, who.id, "pause", {"scope": body.scope, "reason": body.reason,
                                                "until": body.until, "action": body.action,
                                                "exempt_tiers": list(entry.exempt_tiers)})
    return respond(request, entry)


async def resume(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    body = await decode_body(request, RESUME_REQUEST)
    _check_scope(request, body.scope)
    redis = request.app[REDIS]
    entry = await pauses.resume(redis, request.app[PAUSES], directory.settings, body.scope,
                                who.id)
    if entry is None:
        raise errors.NotFound(f"{body.scope} is not paused")
    await _refresh(request)
    await audit.record(redis, who.id, "resume", {"scope": body.scope})
    return respond(request, entry)


async def _refresh(request: web.Request) -> None:
    """This door at once; the others and the workers within a second."""
    settings = request.app[DIRECTORY].current.settings
    request.app[PAUSES].refresh(settings, await pauses.load(request.app[REDIS]))


async def list_pauses(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    admin_of(request, directory, "viewer")
    board = request.app[PAUSES]
    return respond(request, pauses.listing(board, directory.settings, datetime.now(UTC)))


def _day(request: web.Request, name: str, default: date) -> date:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise errors.invalid(name, "expected a date (YYYY-MM-DD)") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise errors.invalid(name, f"must be in the years {FIRST_YEAR} to {LAST_YEAR}")
    return day


async def calendar(request: web.Request) -> web.Response:
    """Pause windows from the configured calendars and ranges, plus each calendar's holiday
    blocks, between `from` and `to` (dates; default: the next 366 days)."""
    settings = request.app[DIRECTORY].current.settings
    admin_of(request, request.app[DIRECTORY].current, "viewer")
    start = _day(request, "from", datetime.now(UTC).date())
    end = _day(request, "to", start + timedelta(days=366))
    if end <= start or end - start > MAX_SPAN:
        raise errors.invalid("to", f"must be after from and at most {MAX_SPAN.days} days on")
    lo = datetime.combine(start, datetime.min.time(), UTC)
    hi = datetime.combine(end, datetime.min.time(), UTC)
    found = windows(settings.pauses, settings.calendars, lo, hi)
    return respond(request, {
        "from": start.isoformat(), "to": end.isoformat(),
        "windows": [w.to_json() for w in found],
        "calendars": {name: [{"first_day": a.isoformat(), "last_day": b.isoformat(),
                              "holiday": what} for a, b, what in holiday_blocks(cal, start, end)]
                      for name, cal in settings.calendars.items()},
    })


async def list_review(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    admin_of(request, directory, "operator")  # buyers and addresses: not for viewers
    found = await parking.waiting_review(request.app[REDIS], directory.settings.redis.shards)
    return respond(request, {"orders": [
        {**msgspec.to_builtins(record_view(directory, record, position)),
         "storefront": record.request.storefront, "buyer_ip": record.request.buyer_ip or None}
        for record, position in found]})


async def decide_review(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    body = await decode_body(request, REVIEW_DECISION)
    order_id = request.match_info["order_id"]
    redis = request.app[REDIS]
    before, after = await parking.decide(redis, order_id, body.decision, who.id)
    if not before:
        raise errors.NotFound(f"no order {order_id}")
    if before == after:
        raise errors.NotInReview(f"order {order_id} is not waiting for review (status {before})",
                                order_id=order_id)
    await audit.record(redis, who.id, f"review.{body.decision}", {"order_id": order_id})
    return respond(request, {"order_id": order_id, "decision": body.decision,
                             "status": after})


async def list_audit(request: web.Request) -> web.Response:
    """Admin actions and code issuance since `since` (RFC 3339 or unix ms; default the last
    hour), oldest first, at most `limit` (default and maximum 1000); the next page is
    `?after=<next>`."""
    directory = request.app[DIRECTORY].current
    admin_of(request, directory, "viewer")
    since_text = request.query.get("since")
    since = int((datetime.now(UTC).timestamp() - 3600) * 1000)
    if since_text:
        try:
            since = int(since_text) if since_text.isdigit() else parse_rfc3339(since_text)
        except ValueError:
            raise errors.invalid("since", "an RFC 3339 timestamp or unix milliseconds") from None
        if not 0 <= since <= MAX_MS:
            raise errors.invalid("since", "out of range")
    limit_text = request.query.get("limit", str(audit.MAX_PAGE))
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= audit.MAX_PAGE:
        raise errors.invalid("limit", f"a whole number from 1 to {audit.MAX_PAGE}")
    after = None
    if request.query.get("after"):
        try:
            after = audit.parse_cursor(request.query["after"])
        except ValueError:
            raise errors.invalid("after", "a `cursor` from an earlier page") from None
        if after[0] > MAX_MS:
            raise errors.invalid("after", "out of range")
    found = await audit.events(request.app[REDIS], directory.settings.redis.shards, since,
                               int(limit_text), after)
    # the next page: ?after=<next> (with the same since), empty when nothing was left
    return respond(request, {"events": found,
                             "next": found[-1]["cursor"] if found else None})


def routes() -> list[web.RouteDef]:
    return [
        web.post("/admin/pause", pause),
        web.post("/admin/resume", resume),
        web.get("/admin/pauses", list_pauses),
        web.get("/admin/calendar", calendar),
        web.get("/admin/review", list_review),
        web.post("/admin/review/{order_id}", decide_review),
        web.get("/admin/audit", list_audit),
    ]
