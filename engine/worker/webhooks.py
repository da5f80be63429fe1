"""Webhooks: every change of an order with a notify_url, POSTed signed from the shard's outbox.

The scripts that change an order append the change to the shard's outbox stream in the same
atomic call, so no change is lost. The worker that owns the shard sends them:

- at least once: an event is acknowledged in the outbox only after a 2xx answer;
- in order per order: while an order has an undelivered event, its later events wait behind
  it (the order's backlog in `webhook:waiting`), and the backlog is retried as a whole;
- with exponential backoff and jitter (first_retry_s, doubling, at most max_retry_s), for
  give_up_after_s (two days by default), then into the dead-letter stream with the reason;
- without slowing intake: it runs beside the batches with its own HTTP client, a time-out per
  attempt and a bounded number of deliveries in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.config.directory import Directory
from engine.config.live import page_secret
from engine.config.settings import Settings
from engine.store import keys, records
from engine.views import order_view
from engine.wire import as_status, json_encode

log = logging.getLogger("kamigate.webhooks")
GROUP = "webhooks"
READ_COUNT = 200
EVENT = "order.updated"

Event = tuple[bytes, dict[bytes, bytes]]
Sender = Callable[[str, bytes, dict[str, str]], Awaitable[bool]]


def signature(secret: str, body: bytes, at: int) -> str:
    """`t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def retry_delay(attempt: int, first: float, cap: float, rng: random.Random) -> float:
    """first * 2**(attempt-1), at most cap, times a jitter of 0.5-1.5."""
    return float(min(cap, first * 2 ** max(0, attempt - 1)) * rng.uniform(0.5, 1.5))


class Dispatcher:
    """Sends the outbox of the shards the worker owns."""

    def __init__(self, settings: Settings, redis: Redis, consumer: str,
                 send: Sender | None = None, rng: random.Random | None = None) -> None:
        self.redis = redis
        self.consumer = consumer
        self.page_secret = ""  # read from Redis at the first round
        self.use(settings)
        self.rng = rng or random.Random()
        self._send = send or self._post
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(settings.webhooks.concurrency)
        self._groups: set[int] = set()
        self.delivered = 0

    def use(self, settings: Settings) -> None:
        """Take a new config (secrets, timeouts, backoff); concurrency changes on restart."""
        self.settings = settings
        self.directory = Directory(settings, self.page_secret)
        self.secrets = {s.id: s.webhook_secret for s in settings.storefronts}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def round(self, shards: Sequence[int]) -> None:
        """Send what is new and retry what is due, for each shard."""
        if not self.page_secret:
            # buyer-page links in the events must match the front doors' (see page_secret)
            self.page_secret = await page_secret(self.redis)
            self.use(self.settings)
        for shard in shards:
            await self._ensure_group(shard)
            await self._retry_due(shard)
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {keys.outbox(shard): ">"}, count=READ_COUNT)
            if reply:
                await self._send_new(shard, reply[0][1])

    async def _ensure_group(self, shard: int) -> None:
        if shard in self._groups:
            return
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
            await self.redis.xgroup_create(keys.outbox(shard), GROUP, id="0", mkstream=True)
        # Events read by a worker that died before sending them are taken over, once.
        reply: Any = await self.redis.xautoclaim(keys.outbox(shard), GROUP, self.consumer, 0,
                                                  "0-0", count=READ_COUNT)
        self._groups.add(shard)
        if reply[1]:
            await self._send_new(shard, reply[1])

    async def _send_new(self, shard: int, events: list[Event]) -> None:
        by_order: dict[str, list[Event]] = {}
        for event in events:
            by_order.setdefault(event[1][records.OUTBOX_ORDER].decode(), []).append(event)
        waiting: Any = await self.redis.hmget(keys.webhook_waiting(shard), list(by_order))
        behind = {oid for oid, w in zip(by_order, waiting, strict=True) if w}
        for oid in behind:
            # An earlier event of this order is still undelivered: queue behind it.
            await self._append_waiting(shard, oid, [e[0] for e in by_order.pop(oid)])
        await asyncio.gather(*(self._deliver_in_order(shard, oid, evs, attempt=0)
                               for oid, evs in by_order.items()))

    async def _append_waiting(self, shard: int, order_id: str, ids: list[bytes]) -> None:
        current: bytes = await self.redis.hget(  # type: ignore[assignment]
            keys.webhook_waiting(shard), order_id) or b""
        joined = b",".join([p for p in current.split(b",") if p] + ids)
        await self.redis.hset(keys.webhook_waiting(shard), order_id, joined)

    async def _deliver_in_order(self, shard: int, order_id: str, events: list[Event],
                                attempt: int) -> None:
        """Send the order's events one by one; at the first failure the rest wait."""
        for index, (entry_id, fields) in enumerate(events):
            ok = await self._deliver(order_id, fields)
            if not ok:
                await self._schedule(shard, order_id, [e[0] for e in events[index:]],
                                     attempt + 1, first_failure_ms=int(time.time() * 1000))
                return
            await self.redis.xack(keys.outbox(shard), GROUP, entry_id)
            self.delivered += 1
        if attempt:
            pipe = self.redis.pipeline(transaction=False)
            pipe.hdel(keys.webhook_waiting(shard), order_id)
            pipe.zrem(keys.webhook_retries(shard), order_id)
            pipe.hdel(keys.webhook_attempts(shard), order_id)
            await pipe.execute()

    async def _schedule(self, shard: int, order_id: str, ids: list[bytes], attempt: int,
                        first_failure_ms: int) -> None:
        hooks = self.settings.webhooks
        raw: bytes | None = await self.redis.hget(  # type: ignore[assignment]
            keys.webhook_attempts(shard), order_id)
        since = int(raw.split(b":")[1]) if raw else first_failure_ms
        if time.time() * 1000 - since > hooks.give_up_after_s * 1000:
            await self._give_up(shard, order_id, ids, attempt)
            return
        delay = retry_delay(attempt, hooks.first_retry_s, hooks.max_retry_s, self.rng)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.webhook_waiting(shard), order_id, b",".join(ids))
        pipe.hset(keys.webhook_attempts(shard), order_id, f"{attempt}:{since}")
        pipe.zadd(keys.webhook_retries(shard), {order_id: time.time() * 1000 + delay * 1000})
        await pipe.execute()

    async def _give_up(self, shard: int, order_id: str, ids: list[bytes], attempt: int) -> None:
        log.warning("webhooks of order %s given up after %d attempts", order_id, attempt)
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xadd(keys.webhook_dead(shard), {"o": order_id, "event": entry_id,
                                                 "why": f"no 2xx after {attempt} attempts"})
            pipe.xack(keys.outbox(shard), GROUP, entry_id)
        pipe.hdel(keys.webhook_waiting(shard), order_id)
        pipe.zrem(keys.webhook_retries(shard), order_id)
        pipe.hdel(keys.webhook_attempts(shard), order_id)
        await pipe.execute()

    async def _retry_due(self, shard: int) -> None:
        due: Any = await self.redis.zrangebyscore(keys.webhook_retries(shard), "-inf",
                                                  time.time() * 1000, start=0, num=READ_COUNT)
        for raw in due:
            order_id = raw.decode()
            joined: bytes = await self.redis.hget(  # type: ignore[assignment]
                keys.webhook_waiting(shard), order_id) or b""
            events: list[Event] = []
            for entry_id in [p for p in joined.split(b",") if p]:
                found: Any = await self.redis.xrange(keys.outbox(shard), entry_id, entry_id)
                if found:
                    events.append(found[0])
            attempts: bytes = await self.redis.hget(  # type: ignore[assignment]
                keys.webhook_attempts(shard), order_id) or b"1:0"
            await self._deliver_in_order(shard, order_id, events,
                                         attempt=int(attempts.split(b":")[0]))

    async def _deliver(self, order_id: str, fields: dict[bytes, bytes]) -> bool:
        record = await records.read(self.redis, order_id)
        if record is None or not record.request.notify_url:
            return True  # nothing to tell anyone: count as sent
        status = as_status(fields[records.OUTBOX_STATUS].decode())
        view = order_view(
            self.directory, record.request, status=status, created_ms=record.created_ms,
            updated_ms=int(fields[records.OUTBOX_UPDATED]),
            codes=record.codes if status == "fulfilled" else None,
            reason=fields[records.OUTBOX_REASON].decode(),
            position=int(fields[records.OUTBOX_POSITION]) or None,
            expires_ms=int(fields[records.OUTBOX_EXPIRES]),
        )
        body = json_encode(view)
        headers = {"Content-Type": "application/json", "Kamigate-Event": EVENT}
        secret = self.secrets.get(record.request.storefront, "")
        if secret:
            headers["Kamigate-Signature"] = signature(secret, body, int(time.time()))
        async with self._slots:
            return await self._send(record.request.notify_url, body, headers)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> bool:
        if self._session is None:
            timeout = aiohttp.ClientTimeout(total=self.settings.webhooks.timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)
        try:
            async with self._session.post(url, data=body, headers=headers,
                                          allow_redirects=False) as resp:
                return 200 <= resp.status < 300
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return False
