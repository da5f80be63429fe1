"""arq worker for the peer benchmark: the async claim job, run by ``arq <this>.WorkerSettings``.

Settings: ``max_jobs`` from ``PEERS_ARQ_MAX_JOBS`` (default 1000; arq's own default is 10) jobs
at once in one process, ``poll_delay`` from ``PEERS_ARQ_POLL_DELAY`` (default 0.01 s; arq's own
default is 0.5 s, which caps a worker near 2 x max_jobs jobs/s), ``keep_result=0`` (no result
stored, like Celery's ignore_result), arq's default queue; one redis.asyncio client (one pool)
made at startup for the job's own calls.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from arq.connections import RedisSettings

from bench.peers.job import async_client, claim_async, redis_url


def redis_settings() -> RedisSettings:
    url = urlparse(redis_url())
    return RedisSettings(host=url.hostname or "127.0.0.1", port=url.port or 6379,
                         database=int((url.path or "/0").lstrip("/") or 0))


async def claim(ctx: dict[str, Any], order_id: str, sku: str) -> str:
    return await claim_async(ctx["client"], order_id, sku)


async def startup(ctx: dict[str, Any]) -> None:
    ctx["client"] = async_client()


async def shutdown(ctx: dict[str, Any]) -> None:
    await ctx["client"].aclose()


class WorkerSettings:
    functions = [claim]  # noqa: RUF012 (arq reads class attributes)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings()
    max_jobs = int(os.environ.get("PEERS_ARQ_MAX_JOBS", "1000"))
    poll_delay = float(os.environ.get("PEERS_ARQ_POLL_DELAY", "0.01"))
    keep_result = 0
    handle_signals = True
