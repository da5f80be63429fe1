"""Building an order from a validated request: the block list, the buckets (429 for a buyer
or IP over limit), maintenance, pauses (a ticket, or 503 `paused`), review rules, the price,
and where it waits if it waits."""

from __future__ import annotations

import hashlib
import time

import msgspec
from aiohttp import web

from engine import errors
from engine.clock import now_ms
from engine.config.directory import Directory
from engine.config.settings import Storefront
from engine.controls import maintenance
from engine.controls.pauses import InForce, parked_ttl_ms
from engine.door.admission import Outcome, Verdict
from engine.http.guards import SURGE
from engine.http.payment import NO_COUPONS, Offer
from engine.http.state import ADMISSION, DIRECTORY, INGEST, MAINTENANCE, PAUSES, REPLIES
from engine.store import keys
from engine.wallet.pricing import quote
from engine.wire import BatchItem, OrderRequest, StreamOrder, TicketReason, msgpack_encode


class Placement(msgspec.Struct):
    """One validated order about to be admitted (or replayed)."""

    order: StreamOrder
    shard: int
    idempotency_key: str | None
    digest: str
    gate: Outcome  # the admission buckets' verdict and the RateLimit headers
    ttl_ms: int
    why: TicketReason  # if it becomes a ticket: "overflow", "paused", "maintenance", "review"
    pause: InForce | maintenance.Waiting | None  # what a paused or maintenance ticket waits for
    review: bool  # needs an operator's review (after the pause or maintenance, if any)

    @property
    def overflow(self) -> bool:
        """Over a capacity bucket: a ticket in the SKU's overflow line (429 without one)."""
        return self.why == "overflow" and self.gate.verdict == Verdict.OVERFLOW

    @property
    def ticket(self) -> bool:
        """Admitted as a ticket: overflowing, paused, behind maintenance or held for review."""
        return self.overflow or self.why != "overflow"


def placement(app: web.Application, storefront: Storefront, req: OrderRequest,
              key: str | None, offer: Offer = NO_COUPONS) -> Placement:
    """Build the order and pass it through the block list, the buckets (429 for a buyer or
    IP over limit), maintenance (503, or a ticket when it queues), pauses (a ticket, or 503
    `paused`) and review rules."""
    directory: Directory = app[DIRECTORY].current
    app[SURGE].arrive(req.sku)
    if directory.blocked.match(req.buyer, req.buyer_ip):
        raise errors.Blocked("this buyer or address may not order here")
    shard = directory.shard_by_sku[req.sku]
    now = now_ms()
    gate = app[ADMISSION].current.decide(time.monotonic(), storefront.id, req.sku, req.buyer,
                                         req.buyer_ip)
    if gate.verdict == Verdict.LIMITED:
        raise errors.RateLimited("too many orders from this buyer or address; retry later",
                                 retry_after=int(gate.headers()["Retry-After"]))
    scoped = app[MAINTENANCE].scoped
    closed = maintenance.closing(scoped, storefront.id, req.sku, now) if scoped else None
    if closed is not None and closed.action != "queue":
        raise errors.Maintenance(f"closed for maintenance ({closed.scope}); retry later",
                                 notice=closed.notice(now, 0) or None,
                                 retry_after=closed.retry_after(now))
    sku = directory.skus[req.sku]
    priced = quote(directory.settings.points, sku, req, discount=offer.discount)
    hold_s = req.hold_s
    if priced is not None and priced.cash_due > 0 and not hold_s:
        hold_s = directory.settings.pricing.payment_hold_s  # held until the payment is confirmed
    if req.points:
        wait = app[ADMISSION].current.points_wait(time.monotonic(), storefront.id, req.buyer,
                                                  redemption=True)
        if wait:
            raise errors.RateLimited("over this buyer's redemptions_per_hour; retry later",
                                     retry_after=max(1, int(wait + 0.999)))
    if req.coupons:
        wait = app[ADMISSION].current.coupon_wait(time.monotonic(), storefront.id,
                                                  req.buyer_ip or "")
        if wait:
            raise errors.RateLimited("over [coupons] redemptions_per_ip_per_hour for this "
                                     "address; retry later",
                                     retry_after=max(1, int(wait + 0.999)))
    why, ttl_ms, pause = _waits_for(app, storefront.id, req, now, sku.queue_ttl_s * 1000)
    review = directory.review_reason(sku, req.qty, req.buyer, req.buyer_ip) is not None
    if review and why == "overflow":
        why = "review"
    if why == "overflow" and app[INGEST].line_full(req.sku):
        # Turned away before any order is built: an overload costs the door little.
        problem = errors.RateLimited("over capacity and the waiting line is full; retry later",
                                     retry_after=1)
        problem.extra_headers = dict(gate.headers())
        raise problem
    order = StreamOrder(
        order_id=keys.new_order_id(shard), storefront=storefront.id, sku=req.sku, qty=req.qty,
        buyer=req.buyer, tier=req.tier, created_ms=now, reply_to=app[REPLIES].channel,
        buyer_ip=req.buyer_ip or "", hold_s=hold_s, notify_url=req.notify_url or "",
        metadata=req.metadata,
        amount=priced.amount if priced else 0, points=req.points,
        cash_due=priced.cash_due if priced else 0, earn=priced.earn if priced else 0,
        priced=priced is not None, coupons=offer.coupon_ids, discount=offer.discount,
    )
    digest = request_digest(req) if key is not None else ""
    return Placement(order, shard, key, digest, gate, ttl_ms, why, pause, review)


def _waits_for(app: web.Application, storefront: str, req: OrderRequest, now: int,
               ttl_ms: int) -> tuple[TicketReason, int, InForce | maintenance.Waiting | None]:
    """(why it would wait: "overflow" unless a pause or a maintenance window that queues
    holds it, how long its ticket may wait, what it waits behind); 503 `paused` for a pause
    that rejects."""
    pause = app[PAUSES].lookup(storefront, req.sku, req.tier)
    if pause is not None:
        ends = pause.ends_ms()
        if pause.action == "reject":
            wait_s = 3600 if ends is None else max(1, min(86400, (ends - now) // 1000))
            raise errors.Paused(pause.notice(), notice=pause.notice(), retry_after=wait_s)
        return "paused", parked_ttl_ms(ttl_ms, ends, now), pause
    closed = app[MAINTENANCE]
    window = maintenance.holds(closed.state, closed.scoped, storefront, req.sku, now)
    if window is not None:  # served in line order when the window ends
        return ("maintenance", parked_ttl_ms(ttl_ms, window.ends_ms(), now),
                maintenance.Waiting(window, now))
    return "overflow", ttl_ms, None


def request_digest(req: OrderRequest | BatchItem) -> str:
    """What an Idempotency-Key is bound to: the body, less how long to wait."""
    canonical = msgspec.structs.replace(req, wait_ms=None)
    if isinstance(canonical, BatchItem):
        canonical = msgspec.structs.replace(canonical, idempotency_key=None)
    return hashlib.sha256(msgpack_encode(canonical)).hexdigest()
