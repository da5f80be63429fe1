"""The audit trail: admin actions and config changes (who, what, before/after) in one stream,
code issuance (order, SKU, lots) in a stream per shard written by the claim itself. Codes
never enter the audit; lots and counts do."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from engine import keys

MAX_PAGE = 1000


async def record(redis: Redis, who: str, action: str, details: dict[str, Any],
                 before: str | None = None, after: str | None = None) -> None:
    """Append one admin action; before/after: hashes of what changed (e.g. config sha256)."""
    fields: dict[str, str] = {"who": who, "action": action, "details": json.dumps(details)}
    if before is not None:
        fields["before"] = before
    if after is not None:
        fields["after"] = after
    await redis.xadd(keys.audit(), fields)  # type: ignore[arg-type]


async def trim(redis: Redis, shards: int, retention_s: int) -> None:
    """Drop entries older than the retention (approximately: whole stream nodes)."""
    floor = f"{int((time.time() - retention_s) * 1000)}-0"
    for name in [keys.audit(), *(keys.issued(s) for s in range(shards))]:
        await redis.xtrim(name, minid=floor, approximate=True)


def _ms(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


async def events(redis: Redis, shards: int, since_ms: int, limit: int = MAX_PAGE
                 ) -> list[dict[str, Any]]:
    """Admin and issuance events at or after since_ms, oldest first, at most `limit`."""
    start = f"{since_ms}-0"
    found: list[tuple[str, dict[str, Any]]] = []
    raw: Any = await redis.xrange(keys.audit(), min=start, count=limit)
    for entry_id, fields in raw:
        event: dict[str, Any] = {
            "id": entry_id.decode(), "at_ms": _ms(entry_id), "kind": "admin",
            "who": fields[b"who"].decode(), "action": fields[b"action"].decode(),
            "details": json.loads(fields[b"details"]),
        }
        for side in (b"before", b"after"):
            if side in fields:
                event[side.decode()] = fields[side].decode()
        found.append((f"{_ms(entry_id):015d}a{entry_id.decode()}", event))
    for shard in range(shards):
        raw = await redis.xrange(keys.issued(shard), min=start, count=limit)
        for entry_id, fields in raw:
            for n, line in enumerate(fields[b"e"].decode().split("\n")):
                order_id, sku, status, lots = [*line.split(" "), "", "", "", ""][:4]
                found.append((f"{_ms(entry_id):015d}i{shard:05d}{entry_id.decode()}{n:06d}", {
                    "id": f"{entry_id.decode()}/{shard}/{n}", "at_ms": _ms(entry_id),
                    "kind": "issuance", "order_id": order_id, "sku": sku, "status": status,
                    "lots": {lot: int(k) for lot, _, k in
                             (part.rpartition(":") for part in lots.split(",") if part)},
                }))
    found.sort(key=lambda item: item[0])
    return [event for _, event in found[:limit]]
