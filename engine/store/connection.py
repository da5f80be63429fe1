"""Connections to Redis: connect with bounded retries, check that the server is fit to hold
orders, and pack commands with hiredis (C) instead of redis-py's pure-Python packer (every
request and every batch sends commands, and packing them was a fifth of the worker's time)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from engine.store import embedded, replication

log = logging.getLogger("kamigate.store")


MASK = "***"


def mask_url(url: str) -> str:
    """The URL with its password as "***", in the user part and in a `password=` query
    value (redis-py takes either): for showing and for log lines."""
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return url
    netloc = parts.netloc
    if password is not None:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:{MASK}@{host}" + (f":{port}" if port else "")
    query = "&".join(
        f"{pair.partition('=')[0]}={MASK}"
        if pair.partition("=")[0].lower() == "password" else pair
        for pair in parts.query.split("&")) if parts.query else ""
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # nothing to hide: the URL exactly as written
    masked = f"{parts.scheme}://{netloc}{parts.path}"  # unix:///path keeps its slashes
    return masked + (f"?{query}" if query else "") + \
        (f"#{parts.fragment}" if parts.fragment else "")


class StoreError(RuntimeError):
    """Redis cannot be used (not running, unreachable, unfit)."""


def resolve_url(url: str, data_dir: str) -> str:
    """The Redis URL to use (`redis.url`); for `embedded`, the running server in data_dir."""
    if url != "embedded":
        return url
    running = embedded.running_url(data_dir)
    if running is None:
        raise StoreError(
            f"the embedded Redis in {data_dir!r} is not running; "
            "start it with `kamigate up` (or set redis.url to a running server)"
        )
    return running


def client(url: str, *, timeout: float | None = 5.0, cluster: bool = False) -> Redis:
    """A client of one server, or with `cluster` of the Redis Cluster whose node `url` names
    (redis-py's cluster client: it routes each command and script by its keys' slot; typed
    as Redis, whose commands it answers)."""
    if cluster:
        return cast(Redis, RedisCluster.from_url(
            url, decode_responses=False, socket_timeout=timeout, socket_connect_timeout=5.0,
            health_check_interval=0, connection_class=FastConnection))
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


def is_cluster(redis: Redis) -> bool:
    return isinstance(redis, RedisCluster)


async def connect(url: str, *, retries: int = 20, delay: float = 0.25,
                  timeout: float | None = 5.0, cluster: bool = False,
                  wait_replicas: int = 0, wait_timeout_ms: int = 100) -> Redis:
    """A client that answered PING, after at most `retries` tries; `timeout` bounds every
    command (a server that stopped answering fails the call instead of hanging it). A
    cluster must also say it is healthy (every slot served). With `wait_replicas` its script
    calls wait for that many replicas (engine/store/replication.py)."""
    redis = client(url, timeout=timeout, cluster=cluster)
    replication.require(redis, wait_replicas, wait_timeout_ms)
    for attempt in range(retries):
        try:
            await redis.ping()
            state = await _cluster_state(redis) if cluster else "ok"
            if state == "ok":
                return redis
            if attempt == retries - 1:
                await redis.aclose()
                raise StoreError(f"the Redis Cluster at {mask_url(url)} is not healthy "
                                 f"(cluster_state {state}): every slot must be served "
                                 "before kamigate starts")
            await asyncio.sleep(delay)
        except (RedisConnectionError, RedisClusterException, OSError) as exc:
            if attempt == retries - 1:
                await redis.aclose()
                if isinstance(exc, RedisClusterException):
                    raise StoreError(f"the Redis Cluster at {mask_url(url)} is not healthy "
                                     f"({exc}): every slot must be served before kamigate "
                                     "starts") from None
                raise StoreError(f"cannot reach Redis at {mask_url(url)}: {exc}") from None
            log.warning("Redis at %s not reachable (%s); %d retries left", mask_url(url), exc,
                        retries - attempt - 1)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def _cluster_state(redis: Redis) -> str:
    state: Any = await cast(RedisCluster, redis).cluster_info()
    found = state.get("cluster_state", "?") if isinstance(state, dict) else "?"
    return found.decode() if isinstance(found, bytes) else str(found)


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


class _HiredisPacking:
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # The server closed this pooled connection (a Redis restart) while it sat idle: open a
        # new one before sending. Nothing was sent yet, so this is never a repeated command
        # (redis-py's own retries are off: a script must not run twice).
        reader = getattr(self, "_reader", None)
        if reader is not None and reader.at_eof():
            await self.disconnect()  # type: ignore[attr-defined]
        await super().send_packed_command(command, check_health)  # type: ignore[misc]

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:
            # 'CONFIG GET' and the like: the server wants the words as separate arguments.
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class FastConnection(_HiredisPacking, Connection):
    """TCP connection with C command packing."""


class FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """Unix-socket connection with C command packing."""
