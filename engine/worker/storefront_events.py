"""Storefront events: what a storefront's `events_url` is told about its buyers' accounts and
waits, as the webhook body its receiver gets.

The scripts that grant points (points_grant.lua), remind of an expiring lot
(points_remind.lua), issue a coupon (coupon_issue.lua), notice a late ticket
(order_delay.lua), flag low stock (stock_low.lua) and announce a pause (pause_mark.lua) add
the event to the shard's outbox in the same atomic call, so the dispatcher sends them like
order changes: signed, at least once, in order per group (a buyer's account events; an order's
own events), with the same retries. Every body carries `id` (the outbox entry: the same id on
a redelivery, for the receiver to drop repeats), `event`, `storefront` and `at`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.clock import rfc3339
from engine.config.settings import Storefront
from engine.views import CodeOpener
from engine.wallet import coupons
from engine.wire import json_encode

POINTS_EVENTS = ("points.granted", "compensation.granted", "points.expiring")
DELAYED = "order.delayed"
COUPON_EVENTS = ("coupon.issued", "coupon.expiring")
STOCK_LOW = "stock.low"
PAUSE_SCHEDULED = "pause.scheduled"


def _text(fields: Mapping[bytes, bytes], name: bytes) -> str:
    return fields.get(name, b"").decode()


def _int(fields: Mapping[bytes, bytes], name: bytes) -> int:
    return int(fields.get(name) or 0)


def _moment(ms: int) -> str | None:
    return rfc3339(ms) if ms > 0 else None


def _points_body(event: str, fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    body: dict[str, Any] = {"points": _int(fields, b"p"),
                            "expires_at": _moment(_int(fields, b"x"))}
    if event != "points.expiring":
        body.update(balance=_int(fields, b"bal"), reason=_text(fields, b"r"),
                    order_id=_text(fields, b"oid") or None, entry_id=_text(fields, b"e"))
    if event == "compensation.granted":
        body["coupon"] = None  # coupons arrive with [[coupon_templates]]
    return body


def _delayed_body(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    at, was, eta = _int(fields, b"at"), _int(fields, b"was"), _int(fields, b"eta")
    return {"order_id": _text(fields, b"oid"), "sku": _text(fields, b"sku"),
            "was_expected_at": _moment(was),
            "expected_at": _moment(eta),
            "eta_s": round((eta - at) / 1000, 1) if eta > at else None,
            "notice": "your order is taking longer than we said"}


def _pause_body(fields: Mapping[bytes, bytes]) -> dict[str, Any]:
    starts, ends = _int(fields, b"p"), _int(fields, b"x")
    reason, tiers = _text(fields, b"r"), _text(fields, b"tiers")
    until = f" until {rfc3339(ends)}" if ends else ""
    return {"scope": _text(fields, b"scope"), "reason": reason,
            "starts_at": rfc3339(starts), "ends_at": _moment(ends),
            "action": _text(fields, b"act"),
            "exempt_tiers": [int(t) for t in tiers.split(",") if t],
            "notice": f"delivery will pause ({reason or 'paused'}) from {rfc3339(starts)}{until}"}


def storefront_of(fields: Mapping[bytes, bytes]) -> tuple[str, str]:
    """(storefront, buyer) of an event entry."""
    wallet = fields.get(b"w")
    if wallet is not None:
        storefront, _, buyer = wallet.decode().partition("\0")
        return storefront, buyer
    return _text(fields, b"sf"), _text(fields, b"by")


async def _coupon_body(redis: Redis, sealer: CodeOpener, fields: Mapping[bytes, bytes]
                       ) -> dict[str, Any] | None:
    """The coupon as it is now (its code included: the storefront hands it to its buyer)."""
    found: Any = await redis.hgetall(_text(fields, b"cpk"))
    if not found:
        return None
    return {"coupon": msgspec.to_builtins(coupons.view(found, sealer, _int(fields, b"at")))}


async def render_event(redis: Redis, sealer: CodeOpener, storefronts: Mapping[str, Storefront],
                       entry_id: bytes, fields: Mapping[bytes, bytes]
                       ) -> tuple[str, str, bytes | None, str]:
    """(storefront, its events_url, the body or None when there is no one to tell, why it
    cannot be sent: the event then goes to the dead letters)."""
    event = _text(fields, b"ev")
    storefront_id, buyer = storefront_of(fields)
    storefront = storefronts.get(storefront_id)
    if storefront is None or not storefront.events_url:
        return storefront_id, "", None, ""  # the storefront no longer takes events
    if event in POINTS_EVENTS:
        data = _points_body(event, fields)
    elif event == DELAYED:
        data = _delayed_body(fields)
    elif event == STOCK_LOW:
        data = {"sku": _text(fields, b"sku"), "available": _int(fields, b"p"),
                "low_stock": _int(fields, b"x")}
    elif event == PAUSE_SCHEDULED:
        data = _pause_body(fields)
    elif event in COUPON_EVENTS:
        found = await _coupon_body(redis, sealer, fields)
        if found is None:
            return storefront_id, "", None, "the coupon no longer reads"
        data = found
    else:
        return storefront_id, "", None, f"unknown storefront event {event!r}"
    body = {"id": entry_id.decode(), "event": event, "storefront": storefront_id,
            **({"buyer": buyer} if buyer else {}), **data, "at": _moment(_int(fields, b"at"))}
    return storefront_id, storefront.events_url, json_encode(body), ""
