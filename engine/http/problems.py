"""Render every error as problem+json: our Problems, aiohttp's HTTP errors, and the unexpected.

The checks every answer passes (maintenance, the breaker), what a failure becomes and the
headers every answer carries are plain functions of (app, method, path): the middleware
applies them to aiohttp's requests, the lean order routes (engine.http.lean) to theirs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, MutableMapping

from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from engine import errors
from engine.clock import now_ms
from engine.http import notices
from engine.http.guards import BREAKER
from engine.http.state import ADMISSION, DIRECTORY, MAINTENANCE, METRICS
from engine.store.replication import NotReplicated
from engine.wire import json_encode

log = logging.getLogger("kamigate.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_BY_STATUS: dict[int, type[errors.Problem]] = {
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
}


def problem_response(problem: errors.Problem,
                     extra_headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json_encode(problem.body()),
        status=problem.status,
        content_type=errors.PROBLEM_JSON,
        headers={**problem.headers(), **(extra_headers or {})},
    )


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problems as problem+json, and every request's latency (one middleware: each costs)."""
    started = time.perf_counter()
    app = request.app
    try:
        closed = refusal(app, request.method, request.path)
        if closed is not None:
            return problem_response(closed)
        response = await _answer(request, handler)
        if not response.prepared:
            settle_headers(app, request.path, response.headers)
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        app[METRICS].door.latency.observe(name, time.perf_counter() - started)


# Always open: health, metrics, the status page, and the switch that ends maintenance.
ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics", "/status", "/admin/maintenance")
# Open in full maintenance too: what the buyer sees (the waiting page says why it waits).
BUYER_PAGES = ("/assets/", "/q/")
ORDER_WRITES = ("POST", "PUT", "PATCH", "DELETE")
# With `action = "queue"` new orders are let in, to wait as tickets (reason "maintenance").
NEW_ORDERS = ("/v1/orders", "/v1/orders/batch")


def refusal(app: web.Application, method: str, path: str) -> errors.Problem | None:
    """Why this request is answered before its route runs (maintenance, an open breaker),
    or None."""
    return _closed_for_maintenance(app, method, path) or _circuit_open(app, path)


def _closed_for_maintenance(app: web.Application, method: str, path: str
                            ) -> errors.Problem | None:
    state = app[MAINTENANCE].state
    if state.mode == "off":
        return None
    now = now_ms()
    mode = state.active(now)
    if mode == "off" or path.startswith(ALWAYS_OPEN) or (
            method == "GET" and path.startswith(BUYER_PAGES)):
        return None
    if mode == "read_only" and not (path.startswith("/v1/") and method in ORDER_WRITES):
        return None
    if state.action == "queue" and method == "POST" and path in NEW_ORDERS:
        return None
    notice = state.notice(now, app[DIRECTORY].current.settings.maintenance.notice_lead_s)
    return errors.Maintenance(f"closed for maintenance ({mode}); retry later", notice=notice,
                              retry_after=state.retry_after(now))


def _circuit_open(app: web.Application, path: str) -> errors.Problem | None:
    """Redis is failing: answer at once rather than pile requests on it (one probe at a time
    goes through to find out whether it is back)."""
    breaker = app[BREAKER]
    if breaker.state == "closed" or path.startswith(ALWAYS_OPEN) or \
            not app[DIRECTORY].current.settings.breaker.enabled:
        return None
    if breaker.allow():
        return None
    return errors.Unavailable("the order store is failing; retry later",
                              retry_after=math.ceil(breaker.retry_after_s()))


def settle_headers(app: web.Application, path: str, headers: MutableMapping[str, str]) -> None:
    """What every answer carries: RateLimit headers on /v1 (when its route set none), and a
    maintenance window in force or coming soon, or a pause of everything announced (an
    order's own notice, set by its route, gives way to maintenance)."""
    if path.startswith("/v1/") and "RateLimit" not in headers:
        headers.update(app[ADMISSION].current.policy_headers(None))
    state = app[MAINTENANCE].state
    notice = None
    if state.mode != "off":
        lead = app[DIRECTORY].current.settings.maintenance.notice_lead_s
        notice = state.notice(now_ms(), lead)
    if notice is None:
        notice = notices.global_pause_ahead(app)  # usually none: one dict lookup
        if notice is not None and notices.HEADER in headers:
            return  # the order's own notice stays
    if notice:
        headers[notices.HEADER] = notices.header_value(notice)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
        _answered(request.app, request.path)
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _BY_STATUS.get(exc.status)
        if kind is None:
            kind = errors.InvalidRequest if exc.status < 500 else errors.Internal
        translated = (too_large(request.app) if exc.status == 413
                      else kind(exc.reason or kind.title))
        request.app[METRICS].door.reject(translated.code)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(translated, allow)
    except Exception as exc:
        return problem_response(failure(request.app, request.method, request.path, exc))


def too_large(app: web.Application) -> errors.Problem:
    limit = app[DIRECTORY].current.settings.server.max_body_bytes
    return errors.PayloadTooLarge(f"the body is larger than server.max_body_bytes ({limit})")


def _answered(app: web.Application, path: str) -> None:
    """A route answered: the breaker counts it a success, unless the path is always open
    (it passed the breaker, and need not reach Redis to answer)."""
    if not path.startswith(ALWAYS_OPEN):
        app[BREAKER].success()


def failure(app: web.Application, method: str, path: str, exc: Exception) -> errors.Problem:
    """The problem a route's exception answers with: its own, 503 for a failing store (the
    breaker counts it), 500 for the unexpected (its traceback logged, never the body)."""
    breaker = app[BREAKER]
    if isinstance(exc, errors.Problem):
        _answered(app, path)
        app[METRICS].door.reject(exc.code)
        return exc
    if isinstance(exc, RedisError | OSError | TimeoutError):
        opened = breaker.opened_count
        if not isinstance(exc, ResponseError):  # an error reply is not an outage
            breaker.failure()
        if breaker.opened_count != opened:
            app[METRICS].breaker_opened.inc()
            log.error("circuit breaker open: Redis is failing (%s)", type(exc).__name__)
        log.warning("store unavailable on %s %s: %s", method, path, type(exc).__name__)
        if isinstance(exc, NotReplicated):
            return errors.Unavailable(
                f"the order store's replicas have not acknowledged it yet ({exc}); retry "
                "(with the same Idempotency-Key: an order placed meanwhile is found again)",
                retry_after=1)
        return errors.Unavailable("the order store is unreachable; retry", retry_after=1)
    log.exception("unexpected error on %s %s", method, path)
    return errors.Internal("unexpected error")
