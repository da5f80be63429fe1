"""What a priced order costs and earns, decided once at admission (pure).

Amounts are in minor units (a currency of 100 minor units, such as CNY's fen). `[points]
per_unit` points are worth one currency unit, so with per_unit = 100 one point is one fen.
"""

from __future__ import annotations

import math

import msgspec

from engine import errors
from engine.config.settings import Points, Sku
from engine.wire import OrderRequest, Price

MINOR_PER_UNIT = 100


class Quote(msgspec.Struct, frozen=True):
    amount: int  # price x qty
    discount: int  # taken off by coupons
    points: int  # to be reserved in the buyer's wallet
    points_value: int  # what they pay, in minor units
    cash_due: int  # amount - discount - points_value: > 0: the order waits for payment
    earn: int  # points granted when the order is fulfilled

    def price(self, currency: str) -> Price:
        return Price(currency=currency, amount=self.amount, discount=self.discount,
                     points=self.points,
                     points_value=self.points_value, cash_due=self.cash_due)


def quote(points: Points, sku: Sku, req: OrderRequest, field: str = "",
          discount: int = 0) -> Quote | None:
    """The order's quote, `discount` taken off by its coupons; None for an unpriced SKU.
    422 problems name the field."""
    if sku.price is None:
        if req.points or req.coupons:
            what = "points" if req.points else "coupons"
            raise errors.NotPriced(f"{field}{what}: SKU {sku.id!r} has no price to pay with "
                                   f"{what}")
        return None
    if req.points and not points.enabled:
        raise errors.invalid(f"{field}points", "points are not enabled here ([points])")
    amount = sku.price * req.qty
    value, rest = divmod(req.points * MINOR_PER_UNIT, points.per_unit)
    if rest:
        raise errors.invalid(f"{field}points", f"must pay whole minor units: a multiple of "
                             f"{points.per_unit // math.gcd(points.per_unit, MINOR_PER_UNIT)}")
    cap = amount * points.max_redeem_percent // 100
    if value > cap:
        raise errors.invalid(f"{field}points", f"at most {cap * points.per_unit // MINOR_PER_UNIT}"
                             f" points may pay for this order (max_redeem_percent "
                             f"{points.max_redeem_percent})")
    if value > amount - discount:
        raise errors.invalid(f"{field}points", f"more than is left to pay after coupons: at "
                             f"most {(amount - discount) * points.per_unit // MINOR_PER_UNIT}")
    cash_due = amount - discount - value
    return Quote(amount, discount, req.points, value, cash_due,
                 earned(points, cash_due, req.tier))


def earned(points: Points, cash_due: int, tier: int) -> int:
    """Points for cash paid: earn_per_unit per currency unit, times the tier's multiplier
    (tiers past the list take its last), plus the largest bonus whose `over` it passes."""
    if not points.enabled or cash_due <= 0 or not points.tier_multipliers:
        return 0
    multiplier = points.tier_multipliers[min(tier, len(points.tier_multipliers) - 1)]
    bonus = max((b.percent for b in points.earn_bonus if cash_due > b.over), default=0)
    base = cash_due / MINOR_PER_UNIT * points.earn_per_unit
    return math.floor(base * multiplier * (100 + bonus) / 100 + 1e-9)
