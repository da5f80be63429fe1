"""Which coupons an order may use and what they take off (pure): each must belong to the buyer
at this storefront, be active and valid now, apply to the SKU and meet its min_spend; at most
one per category, and a coupon that is not stackable stands alone. Discounts apply in the
order the coupons are given, each on what is left to pay; the total never passes the amount.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from engine.errors import FieldError


class Terms(NamedTuple):
    """A coupon as Redis keeps it (engine/wallet/coupons.py), read at the door."""

    coupon_id: str
    storefront: str
    buyer: str
    status: str
    valid_from: int
    valid_until: int
    kind: str
    amount: int
    percent: int
    max_discount: int
    min_spend: int
    skus: tuple[str, ...]
    category: str
    stackable: bool


def terms_of(coupon_id: str, fields: Mapping[bytes, bytes]) -> Terms | None:
    if not fields:
        return None
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return Terms(coupon_id, text["sf"], text["b"], text["st"], int(text["vf"]),
                 int(text["vu"]), text["k"], int(text["a"]), int(text["pc"]), int(text["md"]),
                 int(text["ms"]), tuple(s for s in text["skus"].split(",") if s),
                 text["cat"], text["stk"] == "1")


def _why_not(terms: Terms | None, storefront: str, buyer: str, sku: str, amount: int,
             now: int) -> str | None:
    if terms is None or (terms.storefront, terms.buyer) != (storefront, buyer):
        return "no such coupon for this buyer"
    if terms.status not in ("active", "reserved"):
        # reserved: perhaps by this very order, retried after its door died; coupon_take.lua
        # tells (another order's reservation is refused there, atomically)
        return f"the coupon is {terms.status}"
    if now < terms.valid_from:
        return "the coupon is not valid yet"
    if now >= terms.valid_until:
        return "the coupon is expired"
    if terms.skus and sku not in terms.skus:
        return f"the coupon does not apply to {sku}"
    if amount < terms.min_spend:
        return f"the coupon needs an order of at least {terms.min_spend}"
    return None


def _taken_off(terms: Terms, left: int) -> int:
    if terms.kind == "percent":
        off = left * terms.percent // 100
        return min(off, terms.max_discount) if terms.max_discount else off
    return min(terms.amount, left)  # amount, threshold (min_spend checked above)


def discount(found: Sequence[Terms | None], storefront: str, buyer: str, sku: str,
             amount: int, now: int, field: str = "coupons") -> tuple[int, list[FieldError]]:
    """(what the coupons take off, one error per coupon that may not be used: none when all
    may)."""
    problems: list[FieldError] = []
    categories: set[str] = set()
    seen: set[str] = set()
    left = amount
    for i, terms in enumerate(found):
        why = _why_not(terms, storefront, buyer, sku, amount, now)
        if why is None and terms is not None:
            if terms.coupon_id in seen:
                why = "the coupon is named twice"
            elif terms.category in categories:
                why = f"another coupon of category {terms.category!r} is in the order"
            elif not terms.stackable and len(found) > 1:
                why = "the coupon is not stackable: it stands alone in an order"
        if why is not None or terms is None:
            problems.append(FieldError(f"{field}[{i}]", why or "no such coupon"))
            continue
        seen.add(terms.coupon_id)
        categories.add(terms.category)
        off = _taken_off(terms, left)
        left -= off
    return amount - left, problems
