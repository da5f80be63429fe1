"""The coupon part of the model-based test (tests/test_model.py): every coupon the machine
was issued, whose it is, and which order holds it — from which its status follows once the
worker has settled: redeemed by a fulfilled order, active again (or expired, if the sweep
ended it meanwhile) when its order ended otherwise, reserved while the order waits."""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATE = {"id": "m5", "kind": "amount", "amount": 50, "per_buyer": 2, "total": 5,
            "valid_days": 1}
DISCOUNT = 50  # what it takes off a card-100 order (PRICE 100 a card)


@dataclass
class MCoupon:
    code: str
    storefront: str
    buyer: str
    order_id: str | None = None  # the order that reserved it last
    ended: bool = False  # the expiry sweep ended it (it was active then)

    def expected(self, order_status: str | None) -> str:
        """Its status once every decision is settled."""
        if order_status == "fulfilled":
            return "redeemed"
        if order_status in ("pending", "queued", "held"):
            return "reserved"
        return "expired" if self.ended else "active"
