"""Wire types of wallets: points, the ledger, coupons, compensation (the rest: wire.py)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from engine.wire import (
    ID_PATTERN,
    MAX_POINTS,
    MAX_REASON,
    BodyDecoder,
    Buyer,
    Reason,
    Sku,
    Status,
    _Wire,
)


class Campaign(msgspec.Struct, kw_only=True):
    """What a campaign did: coupons issued now, buyers who had theirs from this campaign
    before, buyers at the template's limit, buyer ids that cannot hold coupons."""

    issued: int
    already: int
    limited: int
    invalid: int



class CampaignRequest(_Wire):
    """POST /admin/coupons/issue: one coupon of a template to each buyer, once per campaign."""

    storefront: Annotated[str, Meta(pattern=ID_PATTERN)]
    template: Annotated[str, Meta(pattern=ID_PATTERN)]
    campaign: Annotated[str, Meta(pattern=ID_PATTERN)]
    buyers: Annotated[list[Buyer], Meta(min_length=1, max_length=1000)]



class Compensated(msgspec.Struct, kw_only=True):
    """What POST /admin/compensations did: orders and points compensated now, coupons
    issued, orders compensated for this reason before, buyer ids without a wallet."""

    orders: int
    points: int
    coupons: int
    already: int
    skipped: int



class CompensationRequest(_Wire):
    """POST /admin/compensations: every order of a storefront made in [from, to)."""

    storefront: Annotated[str, Meta(pattern=ID_PATTERN)]
    from_: str = msgspec.field(name="from")
    to: str
    statuses: Annotated[list[Status], Meta(min_length=1, max_length=7)]
    reason: Annotated[str, Meta(min_length=1, max_length=MAX_REASON)]
    sku: Sku | None = None
    points: Annotated[int, Meta(ge=0, le=10**9)] = 0
    coupon_template: Annotated[str, Meta(max_length=64)] | None = None



class Coupon(msgspec.Struct, kw_only=True):
    code: str | None  # None: sealed with a key that is no longer configured
    template: str
    kind: str
    amount: int
    percent: int
    min_spend: int
    max_discount: int
    valid_from: str
    valid_until: str
    status: Literal["active", "reserved", "redeemed", "expired", "revoked"] | str



class CouponList(msgspec.Struct, kw_only=True):
    coupons: list[Coupon]



class CouponRequest(_Wire):
    """POST /v1/buyers/{buyer}/coupons: issue one coupon of a template."""

    template: Annotated[str, Meta(pattern=ID_PATTERN)]



class LedgerEntry(msgspec.Struct, kw_only=True):
    at: str
    kind: Literal["grant", "deduct", "reserve", "spend", "refund", "expire", "compensation"]
    points: int
    order_id: str | None
    reason: str



class LedgerPage(msgspec.Struct, kw_only=True):
    entries: list[LedgerEntry]
    next_cursor: str | None



class PointsExpiring(msgspec.Struct, kw_only=True):
    points: int  # what expires before `before` ([points] remind_before_days from now)
    before: str



class PointsLot(msgspec.Struct, kw_only=True):
    points: int
    expires_at: str | None  # None: never



class PointsMoved(msgspec.Struct, kw_only=True):
    """The answer to a grant or deduction."""

    entry_id: str
    balance: int



class PointsRequest(_Wire):
    """POST /v1/buyers/{buyer}/points: a grant (points > 0) or a deduction (points < 0)."""

    points: Annotated[int, Meta(ge=-MAX_POINTS, le=MAX_POINTS)]
    reason: Reason = ""
    expires_at: str | None = None  # a grant's lot; None: after [points] expire_after_days



class Wallet(msgspec.Struct, kw_only=True):
    """GET /v1/buyers/{buyer}/points."""

    buyer: str
    balance: int
    reserved: int
    lots: list[PointsLot]
    expiring: PointsExpiring


POINTS_REQUEST = BodyDecoder(PointsRequest)
COMPENSATION_REQUEST = BodyDecoder(CompensationRequest)
COUPON_REQUEST = BodyDecoder(CouponRequest)
CAMPAIGN_REQUEST = BodyDecoder(CampaignRequest)
