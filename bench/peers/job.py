"""The plain order-claim job both peers run, written the way a Python team usually would.

For one order: ``LPOP codes:<sku>``; if a code came back, ``HSET order:<id> status fulfilled
code <code>``, else ``HSET order:<id> status queued``. The client is redis-py (sync for the
Celery task, redis.asyncio for the arq job) with one connection pool per worker process, made
on first use and kept.

The job also does ``INCR done`` so the benchmark can see when every order is recorded; it rides
in the same pipeline as the HSET, so it adds no round trip (two round trips per order in all).

Honest note: this naive job does NOT give kamigate's guarantees. There is no idempotency per
order (a redelivered task pops a second code), no atomicity between the pop and the record (a
crash in between loses a code), no waiting line or fairness between buyers, no buyer limits, no
batch claim, no lease on a shard. All of that only makes it cheaper per order, never slower: the
peers are timed doing strictly less work than kamigate's worker.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aredis

URL_ENV = "PEERS_REDIS_URL"
DONE_KEY = "done"


def codes_key(sku: str) -> str:
    return f"codes:{sku}"


def order_key(order_id: str) -> str:
    return f"order:{order_id}"


def redis_url() -> str:
    return os.environ.get(URL_ENV, "redis://127.0.0.1:6379/0")


# -- sync (Celery) -----------------------------------------------------------------------------
_sync_client: redis.Redis | None = None


def sync_client() -> redis.Redis:
    """One client (and so one connection pool) per worker process, made on first use."""
    global _sync_client
    if _sync_client is None:
        _sync_client = redis.Redis.from_url(redis_url())
    return _sync_client


def _record(pipe: Any, order_id: str, code: Any) -> str:
    """Queue the order's record and the progress count on a pipeline; the status."""
    status = "fulfilled" if code is not None else "queued"
    fields = {"status": status, "code": code} if code is not None else {"status": status}
    pipe.hset(order_key(order_id), mapping=fields)
    pipe.incr(DONE_KEY)
    return status


def claim_sync(client: redis.Redis, order_id: str, sku: str) -> str:
    code = client.lpop(codes_key(sku))
    pipe = client.pipeline(transaction=False)
    status = _record(pipe, order_id, code)
    pipe.execute()
    return status


# -- async (arq) -------------------------------------------------------------------------------
def async_client() -> aredis.Redis:
    return aredis.Redis.from_url(redis_url(), max_connections=200)


async def claim_async(client: aredis.Redis, order_id: str, sku: str) -> str:
    code = await client.lpop(codes_key(sku))
    pipe = client.pipeline(transaction=False)
    status = _record(pipe, order_id, code)
    await pipe.execute()
    return status
