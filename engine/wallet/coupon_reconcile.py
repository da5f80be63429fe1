"""Check the coupon promises against what Redis holds, at a quiet point (the worker has
settled every decided order):

- K1 a coupon serves at most one order, ever: a fulfilled order's coupons are redeemed by it,
  and a redeemed coupon names a fulfilled order.
- K2 a limited template is never issued beyond `total` (its coupons, and its counter) nor a
  buyer beyond `per_buyer`.
- K3 a decided order holds no reserved coupon: a reserved coupon names an order still
  waiting.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.config.settings import Settings
from engine.store import keys, records, wallet_keys

WAITING = ("pending", "queued", "held")


class CouponReport(msgspec.Struct):
    coupons: int = 0
    violations: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.violations


async def _coupons(redis: Redis, shard: int) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    prefix = wallet_keys.coupon("", shard)
    async for name in redis.scan_iter(match=prefix + "*", count=1000):
        raw: Any = await redis.hgetall(name)
        found.append((name.decode()[len(prefix):],
                      {k.decode(): v.decode() for k, v in raw.items()}))
    return found


async def _status(redis: Redis, order_id: str) -> str:
    record = await records.read(redis, order_id)
    return record.status if record is not None else "absent"


async def reconcile_coupons(redis: Redis, settings: Settings) -> CouponReport:
    report = CouponReport()
    v = report.violations
    per_template: Counter[str] = Counter()
    per_buyer: Counter[tuple[str, str, str]] = Counter()
    for shard in range(settings.redis.shards):
        for coupon_id, c in await _coupons(redis, shard):
            report.coupons += 1
            per_template[c["t"]] += 1
            per_buyer[c["sf"], c["b"], c["t"]] += 1
            order = c.get("o", "")
            if c["st"] in ("reserved", "redeemed") and not order:
                v.append(f"K1 coupon {coupon_id} is {c['st']} by no order")
                continue
            status = await _status(redis, order) if order else ""
            if c["st"] == "redeemed" and status != "fulfilled":
                v.append(f"K1 coupon {coupon_id} is redeemed by order {order}, which is "
                         f"{status}")
            if c["st"] == "reserved" and status not in WAITING:
                v.append(f"K3 coupon {coupon_id} is reserved for order {order}, which is "
                         f"{status}")
    for template in settings.coupon_templates:
        counted: Any = await redis.get(wallet_keys.template_issued(template.id))
        if template.total and (per_template[template.id] > template.total
                               or int(counted or 0) > template.total):
            v.append(f"K2 template {template.id}: {per_template[template.id]} coupons, counter "
                     f"{int(counted or 0)}, total {template.total}")
        over = [k for k, n in per_buyer.items()
                if k[2] == template.id and template.per_buyer and n > template.per_buyer]
        for storefront, _, _ in over:
            v.append(f"K2 template {template.id}: a buyer of {storefront} holds more than "
                     f"per_buyer ({template.per_buyer})")
    await _orders(redis, settings.redis.shards, v)
    return report


async def _orders(redis: Redis, shards: int, v: list[str]) -> None:
    """K1 from the orders' side: a fulfilled order's coupons are redeemed by it."""
    for shard in range(shards):
        async for name in redis.scan_iter(match=keys.orders_pattern(shard), count=1000):
            record = records.parse(await redis.hgetall(name))
            if record is None or not record.request.coupons or record.status != "fulfilled":
                continue
            order = record.request
            home = wallet_keys.shard_of_wallet(order.storefront, order.buyer, shards)
            for coupon_id in order.coupons:
                found: Any = await redis.hmget(wallet_keys.coupon(coupon_id, home), ["st", "o"])
                if found[0] != b"redeemed" or (found[1] or b"").decode() != order.order_id:
                    v.append(f"K1 order {order.order_id} is fulfilled but its coupon "
                             f"{coupon_id} is {(found[0] or b'absent').decode()}")
