"""Connect to the configured Redis and check that it is fit to hold orders."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from engine import embedded
from engine.config import Settings
from engine.connection import FastConnection, FastUnixConnection

log = logging.getLogger("kamigate.store")


class StoreError(RuntimeError):
    """Redis cannot be used (not running, unreachable, unfit)."""


def resolve_url(settings: Settings) -> str:
    """The Redis URL to use; for `embedded`, the running server in data_dir."""
    if settings.redis.url != "embedded":
        return settings.redis.url
    url = embedded.running_url(settings.redis.data_dir)
    if url is None:
        raise StoreError(
            f"the embedded Redis in {settings.redis.data_dir!r} is not running; "
            "start it with `kamigate up` (or set redis.url to a running server)"
        )
    return url


def client(url: str, *, timeout: float | None = 5.0) -> Redis:
    redis = Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=timeout,
        socket_connect_timeout=5.0,
        health_check_interval=0,
    )
    pool = redis.connection_pool
    faster = {Connection: FastConnection, UnixDomainSocketConnection: FastUnixConnection}
    # TLS and other connection kinds keep redis-py's own class.
    pool.connection_class = faster.get(pool.connection_class, pool.connection_class)
    return redis


async def connect(url: str, *, retries: int = 20, delay: float = 0.25,
                  timeout: float | None = 5.0) -> Redis:
    """A client that answered PING, after at most `retries` tries; `timeout` bounds every
    command (a server that stopped answering fails the call instead of hanging it)."""
    redis = client(url, timeout=timeout)
    for attempt in range(retries):
        try:
            await redis.ping()
            return redis
        except (RedisConnectionError, OSError) as exc:
            if attempt == retries - 1:
                await redis.aclose()
                raise StoreError(f"cannot reach Redis at {url}: {exc}") from None
            log.warning("Redis at %s not reachable (%s); %d retries left", url, exc,
                        retries - attempt - 1)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def check_server(redis: Redis) -> list[str]:
    """Warnings about a server unfit for durable orders; raises when it cannot work at all."""
    try:
        info = await redis.info("server")
        persistence = await redis.info("persistence")
        # INFO, not CONFIG GET: the least-privilege ACL users (engine/redis_acl.py) have no
        # @admin commands
        policy = str((await redis.info("memory")).get("maxmemory_policy", "noeviction"))
    except RedisError as exc:
        raise StoreError(f"cannot inspect Redis: {exc}") from None
    version = tuple(int(p) for p in str(info.get("redis_version", "0")).split(".")[:2])
    if version < (6, 2):
        raise StoreError(f"Redis {info.get('redis_version')} is too old: kamigate needs >= 6.2")
    warnings = []
    if policy != "noeviction":
        warnings.append(
            f"maxmemory-policy is {policy!r}: Redis may evict orders and stock; set noeviction"
        )
    if not persistence.get("aof_enabled"):
        warnings.append(
            "AOF is off: admitted orders and issued codes can be lost on a Redis restart; "
            "set appendonly yes (appendfsync everysec loses at most about 1 s)"
        )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings
