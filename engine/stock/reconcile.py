"""Check the stock promises against what Redis holds: C1 conservation, C2 uniqueness, C3."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec
from redis.asyncio import Redis

from engine.stock.lots import levels
from engine.store import keys, records


class Report(msgspec.Struct):
    skus: int = 0
    codes_checked: int = 0
    orders_checked: int = 0
    violations: list[str] = []

    @property
    def ok(self) -> bool:
        return not self.violations


async def _codes_in_stock(redis: Redis, sku: str, shard: int, lots: Iterable[str]) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for lot in lots:
        pipe.lrange(keys.lot_codes(sku, lot, shard), 0, -1)
    return [c.decode() for codes in await pipe.execute() for c in codes]


async def _order_codes(redis: Redis, shards: int) -> dict[str, dict[str, list[str]]]:
    """sku -> status -> codes (every code in a fulfilled or held order), plus order counts."""
    out: dict[str, dict[str, list[str]]] = {}
    for shard in range(shards):
        async for key in redis.scan_iter(match=keys.orders_pattern(shard), count=1000):
            record = records.parse(await redis.hgetall(key))
            if record is None or record.status not in ("fulfilled", "held"):
                continue
            by_status = out.setdefault(record.request.sku, {})
            by_status.setdefault(record.status, []).extend(record.codes)
            if len(record.codes) != record.request.qty:
                by_status.setdefault("_short", []).append(record.request.order_id)
    return out


async def reconcile(redis: Redis, shards: int, configured: Iterable[str]) -> Report:
    members: set[bytes] = await redis.smembers(keys.skus_known())  # type: ignore[assignment]
    known = {m.decode() for m in members}
    skus = sorted(known | set(configured))
    report = Report(skus=len(skus))
    issued = await _order_codes(redis, shards)
    for level in await levels(redis, shards, skus):
        sku, shard = level.sku, keys.shard_of_sku(level.sku, shards)
        owner: dict[str, str] = {}  # per SKU: imports dedupe per SKU, as codes belong to one
        v = report.violations
        total = level.available + level.held + level.issued + level.voided + level.expired
        if level.imported != total:
            v.append(f"C1 {sku}: imported {level.imported} != available {level.available} + "
                     f"held {level.held} + issued {level.issued} + voided {level.voided} + "
                     f"expired {level.expired}")
        for name in ("available", "held", "issued", "voided", "expired"):
            if getattr(level, name) < 0:
                v.append(f"C3 {sku}: {name} is negative ({getattr(level, name)})")
        in_stock = await _codes_in_stock(redis, sku, shard, [lot.lot for lot in level.lots])
        if len(in_stock) != level.available:
            v.append(f"C1 {sku}: {len(in_stock)} codes in lots but available says "
                     f"{level.available}")
        if sum(lot.available for lot in level.lots) != level.available:
            v.append(f"C1 {sku}: lot counts do not add up to available {level.available}")
        by_status = issued.get(sku, {})
        for status, counter in (("fulfilled", level.issued), ("held", level.held)):
            found = len(by_status.get(status, []))
            if found != counter:
                v.append(f"C1 {sku}: {found} codes in {status} orders but the counter says "
                         f"{counter}")
        for order_id in by_status.get("_short", []):
            v.append(f"C3 {sku}: order {order_id} holds a code count different from its qty")
        for where, codes in (("stock", in_stock), *((s, c) for s, c in by_status.items()
                                                    if s != "_short")):
            for code in codes:
                report.codes_checked += 1
                place = f"{sku}/{where}"
                if code in owner:
                    # The code itself stays out of the report: reports end up in logs.
                    v.append(f"C2 {sku}: one code is both in {owner[code]} and {place}")
                owner[code] = place
    return report
