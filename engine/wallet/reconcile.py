"""Check the points promises against what Redis holds, at a quiet point (the worker has
settled every decided order):

- P1 per wallet: granted - deducted - expired = balance + reserved + spent; balance and
  reserved never below zero; the lots hold the balance; the reservations hold `reserved`
  (state R) and `spent` (state S).
- P2 per order with points: fulfilled has them spent (S); rejected, expired or cancelled has
  them given back (V); one still waiting keeps them reserved (R).
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis

from engine.store import keys, records, wallet_keys

DECIDED_ELSE = ("rejected", "expired", "cancelled")


class PointsReport(msgspec.Struct):
    wallets: int = 0
    orders_checked: int = 0
    violations: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.violations


def _points_of(held: bytes) -> int:
    lots = held.decode()[2:]
    return sum(int(part.rpartition(":")[2]) for part in lots.split(",") if part)


async def _wallet(redis: Redis, shard: int, wallet: str, report: PointsReport) -> None:
    storefront, _, buyer = wallet.partition("\0")
    w = wallet_keys.wallet(storefront, buyer, shard)
    raw: Any = await redis.hgetall(w.counts)
    count = {k.decode(): int(v) for k, v in raw.items()}
    get = count.get
    name = f"wallet {storefront}/{len(buyer)}-char buyer on shard {shard}"  # no buyer ids
    v = report.violations
    left = get("granted", 0) - get("deducted", 0) - get("expired", 0)
    held = get("balance", 0) + get("reserved", 0) + get("spent", 0)
    if left != held:
        v.append(f"P1 {name}: granted - deducted - expired = {left} but balance + reserved + "
                 f"spent = {held}")
    for field in ("balance", "reserved"):
        if get(field, 0) < 0:
            v.append(f"P1 {name}: {field} is negative ({get(field)})")
    in_lots = sum(n for k, n in count.items() if k.startswith("l:"))
    if in_lots != get("balance", 0):
        v.append(f"P1 {name}: its lots hold {in_lots} but balance says {get('balance', 0)}")
    states: Any = await redis.hgetall(w.reservations)
    by_state = {"R": 0, "S": 0}
    for field, state in states.items():
        if field.startswith(b"c:"):  # an order's coupons (coupon_take.lua)
            continue
        kind = state[:1].decode()
        if kind in by_state:
            by_state[kind] += _points_of(state)
    for kind, field in (("R", "reserved"), ("S", "spent")):
        if by_state[kind] != get(field, 0):
            v.append(f"P1 {name}: reservations in state {kind} hold {by_state[kind]} but "
                     f"{field} says {get(field, 0)}")


async def reconcile_points(redis: Redis, shards: int) -> PointsReport:
    report = PointsReport()
    for shard in range(shards):
        members: Any = await redis.smembers(wallet_keys.wallets(shard))
        for wallet in sorted(m.decode() for m in members):
            report.wallets += 1
            await _wallet(redis, shard, wallet, report)
    for shard in range(shards):
        async for key in redis.scan_iter(match=keys.orders_pattern(shard), count=1000):
            record = records.parse(await redis.hgetall(key))
            if record is None or not record.request.points:
                continue
            report.orders_checked += 1
            order = record.request
            w = wallet_keys.wallet(order.storefront, order.buyer,
                            wallet_keys.shard_of_wallet(order.storefront, order.buyer, shards))
            found: Any = await redis.hget(w.reservations, order.order_id)
            state = (found or b"-")[:1].decode()
            wanted = "S" if record.status == "fulfilled" else \
                "V" if record.status in DECIDED_ELSE else "R"
            if state != wanted:
                report.violations.append(
                    f"P2 order {order.order_id} is {record.status} but its points are "
                    f"{ {'R': 'reserved', 'S': 'spent', 'V': 'given back'}.get(state, 'absent')}")
    return report
