"""The fleet's watch over the config's pauses (explicit windows and holiday calendars), kept by
the owner of shard 0 so it happens once: a pause entering its `notice_lead_s` is announced to
the storefronts concerned (`pause.scheduled`) and audited; its start and its end are audited
(`pause.started`, `pause.ended`: it ran out, was resumed, or left the config). Operators' own
pauses are audited by the route that set them."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.config.settings import Settings
from engine.controls.calendars import Window
from engine.controls.pauses import Ahead, PauseBoard
from engine.store import audit, keys, records, scripts, watch_keys

OWNER_SHARD = 0
KEEP_MS = 7 * 86400 * 1000  # an announcement's mark outlives its start by this


def _details(window: Window) -> dict[str, Any]:
    return {k: v for k, v in window.to_json().items() if v is not None}


def _groups(settings: Settings, scope: str) -> list[str]:
    kind, _, name = scope.partition(":")
    return [f"{records.EVENT_GROUP}{s.id}:pause" for s in settings.storefronts
            if s.events_url and (kind != "storefront" or s.id == name)]


async def _announce(redis: Redis, settings: Settings, ahead: Ahead, now_ms: int) -> bool:
    window = ahead.window
    starts, ends = window.starts_ms(), window.ends_ms()
    marked = await scripts.PAUSE_MARK(
        redis, [watch_keys.pause_marks(), keys.outbox(OWNER_SHARD)],
        [f"scheduled|{window.scope}|{starts}", starts + KEEP_MS, now_ms, window.scope,
         window.reason or window.holiday or "", starts, ends,
         ",".join(str(t) for t in ahead.exempt_tiers), ahead.action,
         *_groups(settings, window.scope)])
    return bool(marked)


async def watch(redis: Redis, settings: Settings, board: PauseBoard, now_ms: int) -> None:
    """One look at the board (refreshed for `now_ms`): announce, audit starts and ends."""
    raw: Any = await redis.hgetall(watch_keys.pause_marks())
    marks = {k.decode(): int(v) for k, v in raw.items()}
    for ahead in board.ahead.values():
        if f"scheduled|{ahead.scope}|{ahead.window.starts_ms()}" in marks:
            continue
        if await _announce(redis, settings, ahead, now_ms):
            await audit.record(redis, "worker", "pause.scheduled",
                               {**_details(ahead.window), "action": ahead.action,
                                "exempt_tiers": list(ahead.exempt_tiers)})
    current = {}
    for window in board.config_in_force:
        current[f"started|{window.scope}|{window.starts_ms()}"] = window
    for mark, window in current.items():
        if mark in marks:
            continue
        forget = window.ends_ms() or now_ms + 400 * 86400 * 1000
        if await scripts.PAUSE_MARK(redis, [watch_keys.pause_marks(), keys.outbox(OWNER_SHARD)],
                                    [mark, forget, now_ms, "", "", 0, 0, "", ""]):
            await audit.record(redis, "worker", "pause.started", _details(window))
    for mark, value in marks.items():
        kind, _, rest = mark.partition("|")
        gone = kind == "started" and mark not in current
        if (gone or (kind == "scheduled" and value < now_ms)) and \
                await redis.hdel(watch_keys.pause_marks(), mark) and gone:
            scope, _, starts = rest.rpartition("|")
            await audit.record(redis, "worker", "pause.ended",
                               {"scope": scope, "starts_at_ms": int(starts)})
