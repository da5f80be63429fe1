"""The front door's application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from redis.asyncio import Redis

from engine.config.directory import Directory
from engine.config.settings import Settings
from engine.controls import maintenance
from engine.controls.pauses import PauseBoard
from engine.door.admission import Admission
from engine.door.circuit import CircuitBreaker
from engine.door.ingest import Ingest
from engine.door.replies import ReplyHub
from engine.http import (
    admin,
    compensations,
    configure,
    coupons,
    health,
    operations,
    orders,
    pages,
    points,
)
from engine.http.fleet import fleet_ctx
from engine.http.guards import BREAKER, SURGE, breaker_rules
from engine.http.problems import problems_middleware
from engine.http.state import (
    ADMISSION,
    DIRECTORY,
    DRAIN,
    INGEST,
    MAINTENANCE,
    METRICS,
    PAUSES,
    REDIS,
    REPLIES,
    AdmissionRef,
    DirectoryRef,
    MaintenanceRef,
)
from engine.http.surge_watch import SurgeWatch
from engine.metrics import Metrics
from engine.store import connection
from engine.worker import matching
from engine.worker.drain import DrainRates

log = logging.getLogger("kamigate.http")


def create_app(settings: Settings, redis_url: str | None = None,
               config_file: str | None = None, watch_config: bool = True) -> web.Application:
    """Build the front door.

    Parameters: settings (validated config); redis_url (overrides the config's URL; for tests
    and for `kamigate up`, which knows where its embedded Redis listens); config_file (the file
    the settings came from: reloaded on SIGHUP, POST /admin/config/reload and, with
    watch_config, when it changes on disk).
    """
    app = web.Application(
        middlewares=[problems_middleware],
        client_max_size=settings.server.max_body_bytes,
    )
    app[DIRECTORY] = DirectoryRef(Directory(settings))
    app[ADMISSION] = AdmissionRef(Admission(settings, time.monotonic()))
    app[METRICS] = Metrics()
    app[DRAIN] = DrainRates()
    app[MAINTENANCE] = MaintenanceRef(maintenance.from_config(settings.maintenance))
    app[PAUSES] = PauseBoard()
    app[BREAKER] = CircuitBreaker(breaker_rules(settings.breaker))
    app[SURGE] = SurgeWatch(settings.surge)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        url = redis_url or connection.resolve_url(settings.redis.url, settings.redis.data_dir)
        redis: Redis = await connection.connect(
            url, timeout=settings.breaker.timeout_s, cluster=settings.redis.cluster,
            wait_replicas=settings.redis.wait_replicas,
            wait_timeout_ms=settings.redis.wait_timeout_ms)
        await connection.check_server(redis)
        app[REDIS] = redis
        room = settings.waiting_room
        app[INGEST] = Ingest(redis, settings.redis.shards, room.capacity if room.enabled else 0,
                             app[METRICS].door.writer)
        app[REPLIES] = ReplyHub(redis)
        await app[REPLIES].start()
        log.info("front door ready; %s", matching.describe())
        yield
        await app[REPLIES].stop()
        await app[INGEST].close()
        await redis.aclose()

    if config_file is not None:
        app[configure.CONFIG_FILE] = config_file
    app.cleanup_ctx.append(redis_ctx)
    app.cleanup_ctx.append(configure.config_ctx(config_file, watch_config))
    app.cleanup_ctx.append(fleet_ctx)
    app.add_routes(orders.routes() + admin.routes() + configure.routes()
                   + operations.routes() + health.routes() + pages.routes() + points.routes()
                   + compensations.routes() + coupons.routes())
    return app
