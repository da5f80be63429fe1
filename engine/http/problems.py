"""Render every error as problem+json: our Problems, aiohttp's HTTP errors, and the unexpected."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable

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
    try:
        closed = _closed_for_maintenance(request) or _circuit_open(request)
        if closed is not None:
            return problem_response(closed)
        response = await _answer(request, handler)
        if request.path.startswith("/v1/") and "RateLimit" not in response.headers:
            response.headers.update(request.app[ADMISSION].current.policy_headers(None))
        _announce(request, response)
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        request.app[METRICS].door.latency.observe(name, time.perf_counter() - started)


# Always open: health, metrics, the status page, and the switch that ends maintenance.
ALWAYS_OPEN = ("/healthz", "/readyz", "/metrics", "/status", "/admin/maintenance")
# Open in full maintenance too: what the buyer sees (the waiting page says why it waits).
BUYER_PAGES = ("/assets/", "/q/")
ORDER_WRITES = ("POST", "PUT", "PATCH", "DELETE")
# With `action = "queue"` new orders are let in, to wait as tickets (reason "maintenance").
NEW_ORDERS = ("/v1/orders", "/v1/orders/batch")


def _closed_for_maintenance(request: web.Request) -> errors.Problem | None:
    ref = request.app[MAINTENANCE]
    state = ref.state
    if state.mode == "off":
        return None
    now = now_ms()
    mode = state.active(now)
    if mode == "off" or request.path.startswith(ALWAYS_OPEN) or (
            request.method == "GET" and request.path.startswith(BUYER_PAGES)):
        return None
    if mode == "read_only" and not (request.path.startswith("/v1/")
                                    and request.method in ORDER_WRITES):
        return None
    if state.action == "queue" and request.method == "POST" and request.path in NEW_ORDERS:
        return None
    notice = state.notice(now, request.app[DIRECTORY].current.settings.maintenance.notice_lead_s)
    return errors.Maintenance(f"closed for maintenance ({mode}); retry later", notice=notice,
                              retry_after=state.retry_after(now))


def _circuit_open(request: web.Request) -> errors.Problem | None:
    """Redis is failing: answer at once rather than pile requests on it (one probe at a time
    goes through to find out whether it is back)."""
    breaker = request.app[BREAKER]
    if breaker.state == "closed" or request.path.startswith(ALWAYS_OPEN) or \
            not request.app[DIRECTORY].current.settings.breaker.enabled:
        return None
    if breaker.allow():
        return None
    return errors.Unavailable("the order store is failing; retry later",
                              retry_after=math.ceil(breaker.retry_after_s()))


def _announce(request: web.Request, response: web.StreamResponse) -> None:
    """A maintenance window in force or coming soon, or a pause of everything announced: say
    so on every answer (an order's own notice, set by its route, gives way to maintenance)."""
    if response.prepared:
        return
    state = request.app[MAINTENANCE].state
    notice = None
    if state.mode != "off":
        lead = request.app[DIRECTORY].current.settings.maintenance.notice_lead_s
        notice = state.notice(now_ms(), lead)
    if notice is None:
        notice = notices.global_pause_ahead(request.app)  # usually none: one dict lookup
        if notice is not None and notices.HEADER in response.headers:
            return  # the order's own notice stays
    if notice:
        response.headers[notices.HEADER] = notices.header_value(notice)


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    breaker = request.app[BREAKER]
    try:
        response = await handler(request)
        breaker.success()
        return response
    except errors.Problem as problem:
        breaker.success()
        request.app[METRICS].door.reject(problem.code)
        return problem_response(problem)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = _BY_STATUS.get(exc.status)
        if kind is None:
            kind = errors.InvalidRequest if exc.status < 500 else errors.Internal
        translated = kind(exc.reason or kind.title)
        request.app[METRICS].door.reject(translated.code)
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return problem_response(translated, allow)
    except (RedisError, OSError, TimeoutError) as exc:
        opened = breaker.opened_count
        if not isinstance(exc, ResponseError):  # an error reply is not an outage
            breaker.failure()
        if breaker.opened_count != opened:
            request.app[METRICS].breaker_opened.inc()
            log.error("circuit breaker open: Redis is failing (%s)", type(exc).__name__)
        log.warning("store unavailable on %s %s: %s", request.method, request.path,
                    type(exc).__name__)
        if isinstance(exc, NotReplicated):
            return problem_response(errors.Unavailable(
                f"the order store's replicas have not acknowledged it yet ({exc}); retry "
                "(with the same Idempotency-Key: an order placed meanwhile is found again)",
                retry_after=1))
        return problem_response(errors.Unavailable("the order store is unreachable; retry",
                                                   retry_after=1))
    except Exception:
        # The traceback goes to the log (never codes: the request body is not logged),
        # the client gets a problem document.
        log.exception("unexpected error on %s %s", request.method, request.path)
        return problem_response(errors.Internal("unexpected error"))
