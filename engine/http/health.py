"""Health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

import hmac
import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from engine import errors
from engine.http import openapi
from engine.http.configure import FOLLOWER
from engine.http.guards import BREAKER, BREAKER_STATE
from engine.http.state import DIRECTORY, METRICS, REDIS
from engine.stock import lots, supplies
from engine.store import keys
from engine.store.heartbeat import alive
from engine.wire import json_encode
from engine.worker import matching

WORKER_TTL_MS = 5000


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    redis = request.app[REDIS]
    running = request.app[FOLLOWER].running
    checks: dict[str, object] = {"config": {"version": running.version,
                                            "sha256": running.sha256},
                                 "kernel": matching.IMPLEMENTATION}
    ready = True
    try:
        started = time.perf_counter()
        await redis.ping()
        checks["redis"] = {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 2)}
        workers = await alive(redis, keys.workers(), WORKER_TTL_MS)
        checks["workers"] = workers
        ready = workers > 0
    except (RedisError, OSError) as exc:
        checks["redis"] = {"ok": False, "error": type(exc).__name__}
        ready = False
    body = {"status": "ready" if ready else "not_ready", "checks": checks}
    return web.Response(body=json_encode(body), status=200 if ready else 503,
                        content_type="application/json")


async def _stream_lags(request: web.Request, shards: int) -> list[int]:
    """Entries in each shard's order stream: pending and undelivered ones, plus what was
    acknowledged in the last half second (the worker trims twice a second). Counting only
    undelivered entries exactly would mean reading them, which a scrape must not do."""
    pipe = request.app[REDIS].pipeline(transaction=False)
    for shard in range(shards):
        pipe.xlen(keys.stream(shard))
    return [int(n) for n in await pipe.execute()]


def _metrics_allowed(request: web.Request, token: str) -> bool:
    given = request.headers.get("Authorization", "")
    # bytes aiohttp cannot decode arrive as surrogates, which do not encode: never a match
    return hmac.compare_digest(given.encode(errors="surrogateescape"),
                               f"Bearer {token}".encode())


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    directory = app[DIRECTORY].current
    token = directory.settings.server.metrics_token
    if token and not _metrics_allowed(request, token):
        raise errors.Unauthenticated("GET /metrics needs the bearer server.metrics_token")
    m = app[METRICS]
    redis = app[REDIS]
    try:
        totals: dict[str, int] = {}
        for shard in range(directory.settings.redis.shards):
            raw: Any = await redis.hgetall(keys.stats(shard))
            for k, v in raw.items():
                totals[k.decode()] = totals.get(k.decode(), 0) + int(v)
        m.fleet.stats = totals
        for level in await lots.levels(redis, directory.settings.redis.shards, directory.skus):
            for state in ("available", "held", "issued", "voided", "expired"):
                m.stock.labels(level.sku, state).set(getattr(level, state))
            m.queue_length.labels(level.sku).set(level.queued)
            low = directory.skus[level.sku].low_stock if level.sku in directory.skus else 0
            if low:
                m.stock_low.labels(level.sku).set(int(level.available < low))
        for supply in await supplies.everything(redis, directory.settings.redis.shards):
            labels = (supply.supplier, supply.sku)
            m.supplier_codes.labels(*labels).set(supply.codes_received)
            m.supplier_failures.labels(*labels).set(supply.failed)
            m.supplier_failing.labels(*labels).set(supply.failures)
            m.supplier_last_success.labels(*labels).set(supply.last_success_ms / 1000)
        m.archived.set(sum([int(await redis.xlen(keys.archive(shard)))
                            for shard in range(directory.settings.redis.shards)]))
        lags = await _stream_lags(request, directory.settings.redis.shards)
        for shard, lag in enumerate(lags):
            m.stream_lag.labels(str(shard)).set(lag)
    except (RedisError, OSError):
        pass  # the process's own metrics are still worth a scrape
    m.breaker_open.set(BREAKER_STATE[request.app[BREAKER].state])
    m.config_version.clear()
    running = request.app[FOLLOWER].running
    m.config_version.labels(running.sha256).set(running.version)
    return web.Response(body=generate_latest(m.registry),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi_json(request: web.Request) -> web.Response:
    return web.Response(body=openapi.document_bytes(), content_type="application/json")


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/readyz", readyz),
        web.get("/metrics", metrics),
        web.get("/openapi.json", openapi_json),
    ]
