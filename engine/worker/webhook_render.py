"""One outbox event as the webhook its receiver gets: an order's change goes to its
notify_url as the Order, as the API shows it; a storefront event to the storefront's
events_url (storefront_events)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import msgspec
from redis.asyncio import Redis

from engine.config.settings import Storefront
from engine.controls.destinations import host_allowed
from engine.store import records
from engine.views import Shop, order_view
from engine.wire import StreamOrder, as_status, json_encode
from engine.worker.storefront_events import render_event

ORDER_UPDATED = "order.updated"


class Delivery(NamedTuple):
    storefront: str
    url: str
    event: str  # Kamigate-Event
    body: bytes


async def render(redis: Redis, shop: Shop, storefronts: Mapping[str, Storefront],
                 order_id: str, request: StreamOrder | None, entry_id: bytes,
                 fields: dict[bytes, bytes]) -> tuple[Delivery | None, str]:
    """(what to send, or None when there is no one to tell; why it cannot be sent: the
    event then goes to the dead letters)."""
    if records.OUTBOX_EVENT in fields:
        storefront_id, url, event_body, why = await render_event(
            redis, shop.sealer, storefronts, entry_id, fields)
        if event_body is None:
            return None, why
        return Delivery(storefront_id, url, fields[records.OUTBOX_EVENT].decode(),
                        event_body), ""
    body, why = await _order_body(redis, shop, storefronts, order_id, request, fields)
    if body is None or request is None:
        return None, why
    return Delivery(request.storefront, request.notify_url, ORDER_UPDATED, body), ""


async def _order_body(redis: Redis, shop: Shop, storefronts: Mapping[str, Storefront],
                      order_id: str, request: StreamOrder | None, fields: dict[bytes, bytes]
                      ) -> tuple[bytes | None, str]:
    if request is None:
        return None, "the order's record does not read"
    if not request.notify_url:
        return None, ""
    storefront = storefronts.get(request.storefront)
    if storefront is None or not host_allowed(request.notify_url, storefront.notify_hosts):
        return None, "the notify_url's host is no longer allowed for this storefront"
    try:
        record = await records.read_to_show(redis, order_id)
        if record is None:
            return None, "the order's record does not read"
        status = as_status(fields[records.OUTBOX_STATUS].decode())
        view = order_view(
            shop, record.request, status=status, created_ms=record.created_ms,
            updated_ms=int(fields[records.OUTBOX_UPDATED]),
            codes=record.codes if status == "fulfilled" else None,
            reason=fields[records.OUTBOX_REASON].decode(),
            position=int(fields[records.OUTBOX_POSITION]) or None,
            expires_ms=int(fields[records.OUTBOX_EXPIRES]),
        )
    except (KeyError, ValueError, msgspec.DecodeError) as exc:
        return None, f"the event does not render ({type(exc).__name__})"
    if status == "fulfilled" and view.codes is None:
        return None, "its codes do not open (sealed with a key that is not configured)"
    return json_encode(view), ""
