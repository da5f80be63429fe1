"""What an answer tells of delivery ahead: a pause or a scoped maintenance window announced for
the order's scope (from its `notice_lead_s`) becomes the Order's `notice` when nothing more
pressing is, and every notice an Order carries is repeated in the Kamigate-Notice header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from engine.clock import now_ms
from engine.controls import maintenance
from engine.controls.pauses import InForce
from engine.http.state import DIRECTORY, MAINTENANCE, PAUSES
from engine.wire import Order

HEADER = "Kamigate-Notice"


def header_value(notice: str) -> str:
    """Header values must be Latin-1: a reason may be Chinese, so it is percent-encoded."""
    return quote(notice, safe=" :()-,.+/")


def waits_behind(app: web.Application, storefront: str, sku: str, tier: int, reason: str
                 ) -> InForce | maintenance.Waiting | None:
    """What a ticket of this reason waits behind now: the pause in force for it, or the
    maintenance window that queues it (None for any other reason: nothing to look up)."""
    if reason not in ("paused", "maintenance"):
        return None
    if reason == "maintenance":
        closed = app[MAINTENANCE]
        now = now_ms()
        window = maintenance.holds(closed.state, closed.scoped, storefront, sku, now)
        return maintenance.Waiting(window, now) if window is not None else None
    return app[PAUSES].lookup(storefront, sku, tier)


def announce_pause(app: web.Application, view: Order, storefront: str) -> Order:
    """The next pause, or scoped maintenance window, of the order's scope when announced and
    the view says nothing else."""
    if view.notice is None:
        coming = app[PAUSES].coming(storefront, view.sku, view.tier)
        if coming is not None:
            view.notice = coming.notice()
        elif app[MAINTENANCE].scoped:
            lead = app[DIRECTORY].current.settings.maintenance.notice_lead_s
            view.notice = maintenance.announced(app[MAINTENANCE].scoped, storefront, view.sku,
                                                now_ms(), lead)
    return view


def with_notice(body: Any, headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` plus Kamigate-Notice when `body` is an Order with a notice (a new dict:
    `headers` may be shared)."""
    if isinstance(body, Order) and body.notice:
        return {**headers, HEADER: header_value(body.notice)}
    return headers


def global_pause_ahead(app: web.Application) -> str | None:
    """The notice of a pause of every order announced now, if any."""
    coming = app[PAUSES].ahead.get("global")
    return coming.notice() if coming is not None else None
