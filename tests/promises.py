"""Checks of the promises C1–C5 against Redis, shared by the flash-sale and fault tests."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.stock.reconcile import reconcile
from engine.store import records

FINAL_OR_QUEUED = {"fulfilled", "held", "queued", "rejected", "expired", "cancelled"}


async def assert_promises(redis: Redis, shards: int, skus: list[str],
                          admitted: list[str], imported: set[str]) -> dict[str, Any]:
    """C1–C3 by reconcile, C4 every admitted order decided, codes all from the import."""
    report = await reconcile(redis, shards, skus)
    assert report.ok, report.violations
    statuses: dict[str, int] = {}
    issued: list[str] = []
    for order_id in admitted:
        record = await records.read(redis, order_id)
        assert record is not None, f"admitted order {order_id} is lost"
        assert record.status in FINAL_OR_QUEUED, f"{order_id} stuck in {record.status}"
        statuses[record.status] = statuses.get(record.status, 0) + 1
        if record.status == "fulfilled":
            assert len(record.codes) == record.request.qty
            issued.extend(record.codes)
    assert len(issued) == len(set(issued)), "a code was issued twice"
    assert set(issued) <= imported, "a code that was never imported was issued"
    return {"statuses": statuses, "issued": issued}
