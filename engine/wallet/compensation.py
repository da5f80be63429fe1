"""Compensation: points (and a coupon) for the buyers of orders that a surge or a maintenance
window hurt, at most once per order per reason, whoever asks how often.

Two ways in: automatically, when an order gets its codes more than `[compensation]
delay_over_s` after it was made (claim.lua marks it in the shard's settle stream, the worker
compensates it there: a crash in between leaves the entry to be settled again); and by an
operator, for every order of a storefront made in a window (POST /admin/compensations). Both
are a grant of kind "compensation" and a coupon issue, both keyed "comp:<order id>:<reason>",
so a second request for the same order and reason — with the same points or not — moves
nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from engine.config.settings import CouponTemplate, Settings
from engine.store import keys, records
from engine.store.sealing import sealer_of
from engine.wallet import coupons, ledger
from engine.wire import StreamOrder, decode_stream_order

DAY_MS = 86_400_000
AUTO_REASON = "delay"
SCAN_BATCH = 500


def late_before(settings: Settings, now: int) -> int:
    """Orders made before this (unix ms) and given codes now are compensated; 0 = none are
    (no delay_over_s, or nothing to compensate with)."""
    rule = settings.compensation
    with_points = rule.points and settings.points.enabled
    if not rule.delay_over_s or not (with_points or rule.coupon_template):
        return 0
    return now - rule.delay_over_s * 1000


def template_of(settings: Settings, name: str | None) -> CouponTemplate | None:
    return next((t for t in settings.coupon_templates if t.id == name), None) if name else None


async def compensate(redis: Redis, settings: Settings, order: StreamOrder, points: int,
                     reason: str, now: int, template: CouponTemplate | None = None
                     ) -> tuple[str, int]:
    """Grant `points` and issue a coupon of `template` to the order's buyer for `reason`:
    ("ok", coupons issued now), ("replay", 0) (compensated for this reason before) or
    ("skipped", 0) (its buyer id cannot have a wallet, or there is nothing to give)."""
    points = points if settings.points.enabled else 0
    if not (points > 0 or template is not None) or not ledger.valid_buyer(order.buyer):
        return "skipped", 0
    key = f"comp:{order.order_id}:{reason}"
    outcome = "replay"
    if points > 0:
        days = settings.points.expire_after_days
        moved, _, _ = await ledger.move(
            redis, settings.redis.shards, order.storefront, order.buyer, points,
            "compensation", reason, now + days * DAY_MS if days else 0, now, key=key,
            digest="comp", order_id=order.order_id,
            tell=ledger.notice(settings, order.storefront, order.buyer))
        outcome = "ok" if moved == "ok" else outcome
    issued = 0
    if template is not None:
        found, _, _ = await coupons.issue(coupons.direct(redis), settings, sealer_of(
            settings.codes.keys, settings.codes.current, settings.codes.fingerprint_key),
            order.storefront, order.buyer, template, now, key, key)
        issued = int(found == "ok")
        outcome = "ok" if issued else outcome
    return outcome, issued


async def compensate_late(redis: Redis, settings: Settings, order_id: str, now: int) -> str:
    """The automatic compensation of an order that got its codes late."""
    record = await records.read(redis, order_id)
    if record is None:
        return "skipped"
    rule = settings.compensation
    outcome, _ = await compensate(redis, settings, record.request, rule.points, AUTO_REASON,
                                  now, template_of(settings, rule.coupon_template))
    return outcome


@dataclass(frozen=True)
class Window:
    """Which orders an operator compensates: a storefront's, made in [from_ms, to_ms), in
    one of `statuses`, of one SKU or any."""

    storefront: str
    from_ms: int
    to_ms: int
    statuses: frozenset[str]
    sku: str | None = None


@dataclass
class Tally:
    orders: int = 0  # compensated now
    points: int = 0  # granted now
    coupons: int = 0  # issued now
    already: int = 0  # compensated for this reason before
    skipped: int = 0  # buyer ids that cannot have a wallet


async def matching_orders(redis: Redis, shards: int, window: Window
                          ) -> AsyncIterator[StreamOrder]:
    """The orders in the window, shard by shard (SCAN: never one reply with them all)."""
    for shard in range(shards):
        found: list[Any] = []
        async for key in redis.scan_iter(match=keys.orders_pattern(shard), count=SCAN_BATCH):
            found.append(key)
            if len(found) >= SCAN_BATCH:
                async for order in _pick(redis, found, window):
                    yield order
                found = []
        async for order in _pick(redis, found, window):
            yield order


async def _pick(redis: Redis, names: list[Any], window: Window) -> AsyncIterator[StreamOrder]:
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.hmget(name, [records.REQUEST, records.STATUS, records.CREATED])
    for raw, status, created in await pipe.execute():
        if raw is None or status is None or status.decode() not in window.statuses:
            continue
        if not window.from_ms <= int(created or 0) < window.to_ms:
            continue
        order = decode_stream_order(raw)
        if order.storefront == window.storefront and window.sku in (None, order.sku):
            yield order


async def compensate_window(redis: Redis, settings: Settings, window: Window, points: int,
                            reason: str, now: int, template: CouponTemplate | None = None
                            ) -> Tally:
    tally = Tally()
    async for order in matching_orders(redis, settings.redis.shards, window):
        outcome, issued = await compensate(redis, settings, order, points, reason, now,
                                           template)
        if outcome == "ok":
            tally.orders += 1
            tally.points += points if settings.points.enabled else 0
            tally.coupons += issued
        elif outcome == "replay":
            tally.already += 1
        else:
            tally.skipped += 1
    return tally
