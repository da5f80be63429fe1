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

from engine.config.settings import Settings
from engine.controls import maintenance, pauses
from engine.door.admission import Admission
from engine.door.backpressure import Throttle
from engine.http.guards import BREAKER, BREAKER_STATE, SURGE
from engine.http.state import ADMISSION, DIRECTORY, DRAIN, MAINTENANCE, METRICS, PAUSES, REDIS
from engine.store import keys
from engine.store.heartbeat import alive, heartbeat
from engine.tasks import stop_tasks

log = logging.getLogger("kamigate.fleet")
INTERVAL_S = 0.5
HEARTBEAT_TTL_MS = 3000
THROTTLE_TTL_MS = 3000  # releasers fall back to the configured rate if doors go quiet


async def _round(app: web.Application, door_id: str) -> None:
    redis = app[REDIS]
    settings = app[DIRECTORY].current.settings
    await heartbeat(redis, keys.front_doors(), door_id, HEARTBEAT_TTL_MS)
    share = 1 / max(1, await alive(redis, keys.front_doors(), HEARTBEAT_TTL_MS))
    current = app[ADMISSION].current
    if current.share != share or current.settings is not settings:
        # A new share (a door came or went) or a new config: new buckets, whole.
        app[ADMISSION].current = Admission(settings, time.monotonic(), share).inherit(current)
    await app[DRAIN].refresh(redis, settings.redis.shards)
    app[MAINTENANCE].state = await maintenance.load(redis, settings.maintenance)
    app[MAINTENANCE].scoped = await maintenance.load_scoped(redis)
    app[PAUSES].refresh(settings, await pauses.load(redis))
    await _follow_downstream(app, settings)
    await app[SURGE].round(redis, settings, app[METRICS], app[DOWNSTREAM].drained_per_s)


class Downstream:
    """What the door last saw of the workers, and the throttle it keeps."""

    def __init__(self) -> None:
        self.throttle = Throttle()
        self.claimed = -1
        self.at = 0.0
        self.lag = 0
        self.drained_per_s = 0.0


DOWNSTREAM = web.AppKey("downstream", Downstream)


async def _follow_downstream(app: web.Application, settings: Settings) -> None:
    """Measure the backlog and the drain; throttle admission while the workers are behind."""
    redis, down = app[REDIS], app[DOWNSTREAM]
    pipe = redis.pipeline(transaction=False)
    for shard in range(settings.redis.shards):
        pipe.xlen(keys.stream(shard))
        pipe.hget(keys.stats(shard), "claim_orders")
    found = await pipe.execute()
    down.lag = sum(int(n) for n in found[0::2])
    claimed = sum(int(n or 0) for n in found[1::2])
    now = time.monotonic()
    if down.claimed >= 0 and now > down.at:
        down.drained_per_s = max(0.0, (claimed - down.claimed) / (now - down.at))
    down.claimed, down.at = claimed, now
    configured = settings.limits.global_.rate if settings.limits.global_ else None
    rate = down.throttle.step(settings.backpressure, down.lag, app[DRAIN].delay_ms,
                              down.drained_per_s, configured)
    app[ADMISSION].current.throttle(rate, now)
    if rate is None:
        await redis.delete(keys.throttle())
    else:
        await redis.set(keys.throttle(), f"{rate:.3f}", px=THROTTLE_TTL_MS)
    metrics = app[METRICS]
    metrics.throttled.set(0 if rate is None else 1)
    metrics.admission_rate.set(-1 if rate is None and configured is None
                               else (rate if rate is not None else configured or 0))
    metrics.backlog.set(down.lag)


async def fleet_ctx(app: web.Application) -> AsyncIterator[None]:
    door_id = secrets.token_hex(6)
    app[DOWNSTREAM] = Downstream()

    # One round before the first request: pauses and maintenance in force from the start.
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await _round(app, door_id)

    async def loop() -> None:
        while True:
            try:
                await _round(app, door_id)
            except (RedisError, OSError, TimeoutError) as exc:
                app[BREAKER].failure()
                log.warning("fleet round skipped (%s)", type(exc).__name__)
            breaker = app[BREAKER]
            app[METRICS].breaker_open.set(BREAKER_STATE[breaker.state])
            await asyncio.sleep(INTERVAL_S)

    task = asyncio.create_task(loop())
    yield
    await stop_tasks([task])
    with contextlib.suppress(RedisError, OSError):
        await app[REDIS].zrem(keys.front_doors(), door_id)
