"""Request parts several routes read the same way: a buyer in the path, the Idempotency-Key
header, a storefront named in an operator's body. Each refusal is a 422 naming the field."""

from __future__ import annotations

from aiohttp import web

from engine import errors
from engine.config.settings import Settings
from engine.wallet import ledger


def buyer_of(request: web.Request) -> str:
    """The path's buyer: one that can have a wallet and coupons."""
    buyer = request.match_info["buyer"]
    if not ledger.valid_buyer(buyer):
        raise errors.invalid("buyer", "1-128 visible ASCII characters")
    return buyer


def idempotency_key(request: web.Request) -> str:
    """The Idempotency-Key header ("" when there is none)."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= 128 and key.isascii() and key.isprintable()
                                and " " not in key):
        raise errors.invalid("Idempotency-Key", "must be 1-128 visible ASCII characters")
    return key or ""


def known_storefront(settings: Settings, storefront: str) -> str:
    if storefront not in {s.id for s in settings.storefronts}:
        raise errors.invalid("storefront", f"{storefront!r} is not a configured storefront")
    return storefront
