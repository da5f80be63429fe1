"""The audit trail: admin actions and config changes (who, what, before/after) in one stream,
code issuance (order, SKU, lots) in a stream per shard written by the claim itself. Codes
never enter the audit; lots and counts do."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from engine.store import keys

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
    """Drop entries older than the retention (run once a minute by a worker)."""
    floor = f"{int((time.time() - retention_s) * 1000)}-0"
    for name in [keys.audit(), *(keys.issued(s) for s in range(shards))]:
        await redis.xtrim(name, minid=floor, approximate=False)


Cursor = tuple[int, int, int, int, int]  # entry ms, entry seq, kind (0 admin, 1 issuance),
# shard + 1 (0 for admin), line within the entry: the order of events, where a page ends


def _id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.decode().partition("-")
    return int(ms), int(seq or 0)


def cursor_text(cursor: Cursor) -> str:
    return "-".join(str(part) for part in cursor)


def parse_cursor(text: str) -> Cursor:
    """ValueError when it is not one of ours."""
    parts = [int(p) for p in text.split("-")]
    if len(parts) != 5 or min(parts) < 0:
        raise ValueError(text)
    return parts[0], parts[1], parts[2], parts[3], parts[4]


async def events(redis: Redis, shards: int, since_ms: int, limit: int = MAX_PAGE,
                 after: Cursor | None = None) -> list[dict[str, Any]]:
    """Admin and issuance events at or after since_ms (and strictly after the cursor `after`,
    the `cursor` of the last event of a page), oldest first, at most `limit`."""
    floor = max(since_ms, after[0] if after else 0)
    start = f"{floor}-0"
    found: list[tuple[Cursor, dict[str, Any]]] = []
    raw: Any = await redis.xrange(keys.audit(), min=start, count=limit + 1)
    for entry_id, fields in raw:
        ms, seq = _id(entry_id)
        event: dict[str, Any] = {
            "at_ms": ms, "kind": "admin",
            "who": fields[b"who"].decode(), "action": fields[b"action"].decode(),
            "details": json.loads(fields[b"details"]),
        }
        for side in (b"before", b"after"):
            if side in fields:
                event[side.decode()] = fields[side].decode()
        found.append(((ms, seq, 0, 0, 0), event))
    for shard in range(shards):
        raw = await redis.xrange(keys.issued(shard), min=start, count=limit + 1)
        for entry_id, fields in raw:
            ms, seq = _id(entry_id)
            for n, line in enumerate(fields[b"e"].decode().split("\n")):
                order_id, sku, status, lots = [*line.split(" "), "", "", "", ""][:4]
                found.append(((ms, seq, 1, shard + 1, n), {
                    "at_ms": ms, "kind": "issuance", "order_id": order_id, "sku": sku,
                    "status": status,
                    "lots": {lot: int(k) for lot, _, k in
                             (part.rpartition(":") for part in lots.split(",") if part)},
                }))
    found.sort(key=lambda item: item[0])
    page = [(c, e) for c, e in found if after is None or c > after][:limit]
    for cursor, event in page:
        event["cursor"] = cursor_text(cursor)
    return [event for _, event in page]
