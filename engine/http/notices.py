"""What an answer tells of delivery ahead: a pause announced for the order's scope (from its
`notice_lead_s`) becomes the Order's `notice` when nothing more pressing is, and every notice an
Order carries is repeated in the Kamigate-Notice header."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from aiohttp import web

from engine.http.state import PAUSES
from engine.wire import Order

HEADER = "Kamigate-Notice"


def header_value(notice: str) -> str:
    """Header values must be Latin-1: a reason may be Chinese, so it is percent-encoded."""
    return quote(notice, safe=" :()-,.+/")


def announce_pause(app: web.Application, view: Order, storefront: str) -> Order:
    """The next pause of the order's scope, when announced and the view says nothing else."""
    if view.notice is None:
        coming = app[PAUSES].coming(storefront, view.sku, view.tier)
        if coming is not None:
            view.notice = coming.notice()
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
