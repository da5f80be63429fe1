"""Liveness of a fleet's members: one sorted set per kind, member -> last beat (unix ms)."""

from __future__ import annotations

from redis.asyncio import Redis

from engine.clock import now_ms


async def heartbeat(redis: Redis, registry: str, member: str, ttl_ms: int) -> None:
    """Say `member` is alive; forget members silent for longer than ttl_ms."""
    now = now_ms()
    pipe = redis.pipeline(transaction=False)
    pipe.zadd(registry, {member: now})
    pipe.zremrangebyscore(registry, "-inf", now - ttl_ms)
    await pipe.execute()


async def alive(redis: Redis, registry: str, ttl_ms: int) -> int:
    """How many members beat within the last ttl_ms."""
    return int(await redis.zcount(registry, now_ms() - ttl_ms, "+inf"))
