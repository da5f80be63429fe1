"""An operator compensates the buyers of a storefront's orders in a window (a surge, a
maintenance): once per order per reason, however often it is asked, and audited."""

from __future__ import annotations

from aiohttp import web

from engine import errors
from engine.clock import now_ms, parse_rfc3339
from engine.http.auth import admin_of
from engine.http.codec import decode_body, respond
from engine.http.fields import known_storefront
from engine.http.state import DIRECTORY, REDIS
from engine.store import audit
from engine.wallet.compensation import Window, compensate_window, template_of
from engine.wire_wallet import COMPENSATION_REQUEST, Compensated

MAX_WINDOW_MS = 366 * 86_400_000


def _moment(name: str, text: str) -> int:
    try:
        return parse_rfc3339(text)
    except ValueError as exc:
        raise errors.invalid(name, str(exc)) from None


async def compensate(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    body = await decode_body(request, COMPENSATION_REQUEST)
    settings = directory.settings
    known_storefront(settings, body.storefront)
    if body.sku is not None and body.sku not in directory.skus:
        raise errors.invalid("sku", f"{body.sku!r} is not a configured SKU")
    from_ms, to_ms = _moment("from", body.from_), _moment("to", body.to)
    if to_ms <= from_ms:
        raise errors.invalid("to", "must be after from")
    if to_ms - from_ms > MAX_WINDOW_MS:
        raise errors.invalid("to", "a window is at most 366 days")
    template = template_of(settings, body.coupon_template)
    if body.coupon_template and template is None:
        raise errors.invalid("coupon_template", f"{body.coupon_template!r} is not a "
                                                "configured coupon template")
    if body.points <= 0 and template is None:
        raise errors.invalid("points", "compensate with at least 1 point or a coupon")
    if body.points and not settings.points.enabled:
        raise errors.invalid("points", "points are not enabled here ([points])")
    window = Window(body.storefront, from_ms, to_ms, frozenset(body.statuses), body.sku)
    tally = await compensate_window(request.app[REDIS], settings, window, body.points,
                                    body.reason, now_ms(), template)
    await audit.record(request.app[REDIS], who.id, "compensate", {
        "storefront": body.storefront, "sku": body.sku, "from": body.from_, "to": body.to,
        "statuses": sorted(body.statuses), "points": body.points, "reason": body.reason,
        "coupon_template": body.coupon_template, "coupons": tally.coupons,
        "orders": tally.orders, "points_granted": tally.points, "already": tally.already,
        "skipped": tally.skipped})
    return respond(request, Compensated(orders=tally.orders, points=tally.points,
                                        coupons=tally.coupons,
                                        already=tally.already, skipped=tally.skipped))


def routes() -> list[web.RouteDef]:
    return [web.post("/admin/compensations", compensate)]
