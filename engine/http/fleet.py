"""The front door's background duties: say it is alive, take its share of the fleet's rates,
and keep a fresh copy of how fast the waiting lines drain (for ETAs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.exceptions import RedisError

from engine import keys
from engine.admission import Admission
from engine.heartbeat import alive, heartbeat
from engine.http.state import ADMISSION, DIRECTORY, DRAIN, REDIS

log = logging.getLogger("kamigate.fleet")
INTERVAL_S = 0.5
HEARTBEAT_TTL_MS = 3000


async def _round(app: web.Application, door_id: str) -> None:
    redis = app[REDIS]
    settings = app[DIRECTORY].current.settings
    await heartbeat(redis, keys.front_doors(), door_id, HEARTBEAT_TTL_MS)
    share = 1 / max(1, await alive(redis, keys.front_doors(), HEARTBEAT_TTL_MS))
    current = app[ADMISSION].current
    if current.share != share or current.settings is not settings:
        # A new share (a door came or went) or a new config: new buckets, whole.
        app[ADMISSION].current = Admission(settings, time.monotonic(), share)
    await app[DRAIN].refresh(redis, settings.redis.shards)


async def fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    door_id = secrets.token_hex(6)

    async def loop() -> None:
        while True:
            try:
                await _round(app, door_id)
            except (RedisError, OSError) as exc:
                log.warning("fleet round skipped (%s)", type(exc).__name__)
            await asyncio.sleep(INTERVAL_S)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(RedisError, OSError):
        await app[REDIS].zrem(keys.front_doors(), door_id)
