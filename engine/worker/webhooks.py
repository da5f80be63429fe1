"""Webhooks: every change of an order with a notify_url, POSTed signed from the shard's outbox.

The scripts that change an order append the change to the shard's outbox stream in the same
atomic call, so no change is lost. The worker that owns the shard sends them:

- at least once: an event is acknowledged in the outbox only after a 2xx answer;
- in order per order: one delivery task per order at a time; while an order has an
  undelivered event, its later events wait behind it (the order's backlog in
  `webhook:waiting`), and the backlog is retried as a whole;
- with exponential backoff and jitter (first_retry_s, doubling, at most max_retry_s), for
  give_up_after_s (two days by default), then into the dead-letter stream with the reason; an
  event that cannot be rendered (its codes sealed with a key no longer configured, a record
  that no longer reads) goes there at once;
- without one receiver holding up another: each order's delivery runs as a task of its own,
  at most `concurrency` in flight and `per_storefront` to one storefront (webhook_sender), a
  storefront with too many waiting has its new events put behind for a moment, and a
  destination that keeps failing is left alone while it backs off; a round only reads and
  starts tasks, so new events never wait behind retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.config.directory import Directory
from engine.config.live import page_secret
from engine.config.settings import Settings
from engine.controls.destinations import host_allowed
from engine.store import keys, records
from engine.views import order_view
from engine.wire import StreamOrder, as_status, decode_stream_order, json_encode
from engine.worker.webhook_sender import WebhookSender, retry_delay, signature

log = logging.getLogger("kamigate.webhooks")
GROUP = "webhooks"
READ_COUNT = 200
EVENT = "order.updated"
WAITING_PER_SLOT = 4  # orders of one storefront waiting per slot before new ones are put behind
PUT_BEHIND_S = 1.0

Event = tuple[bytes, dict[bytes, bytes]]

class Dispatcher:
    """Sends the outbox of the shards the worker owns."""

    def __init__(self, settings: Settings, redis: Redis, consumer: str,
                 rng: random.Random | None = None) -> None:
        self.redis = redis
        self.consumer = consumer
        self.page_secret = ""  # read from Redis at the first round
        self.sender = WebhookSender(settings.webhooks)
        self.use(settings)
        self.rng = rng or random.Random()
        self._groups: set[int] = set()
        self._inbox: dict[str, list[Event]] = {}  # order id -> events that came while busy
        self._running = Counter[str]()  # storefront -> orders with a delivery task
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0

    def use(self, settings: Settings) -> None:
        """Take a new config (secrets, timeouts, backoff); the caps change on restart."""
        self.settings = settings
        self.directory = Directory(settings, self.page_secret)
        self.storefronts = {s.id: s for s in settings.storefronts}
        self.sender.use(settings.webhooks)

    async def close(self) -> None:
        """Stop: deliveries in flight are cut off (their events stay unacknowledged and are
        sent again by the next owner of the shard)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.sender.close()

    async def idle(self) -> None:
        """Wait for the deliveries started so far (tests and tools)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def round(self, shards: Sequence[int]) -> None:
        """Start deliveries of what is new and of what is due again, for each shard."""
        if not self.page_secret:
            # buyer-page links in the events must match the front doors' (see page_secret)
            self.page_secret = await page_secret(self.redis)
            self.use(self.settings)
        for shard in shards:
            await self._ensure_group(shard)
            await self._start_due(shard)
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {keys.outbox(shard): ">"}, count=READ_COUNT)
            if reply:
                await self._take_new(shard, reply[0][1])

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
            await self._take_new(shard, reply[1])

    # -- starting deliveries ----------------------------------------------------------------
    async def _requests(self, order_ids: Sequence[str]) -> dict[str, StreamOrder | None]:
        """Each order's request (storefront, notify_url); None for one that does not read."""
        pipe = self.redis.pipeline(transaction=False)
        for order_id in order_ids:
            pipe.hget(keys.order(order_id, keys.shard_of_order(order_id) or 0), records.REQUEST)
        found: dict[str, StreamOrder | None] = {}
        for order_id, raw in zip(order_ids, await pipe.execute(), strict=True):
            try:
                found[order_id] = decode_stream_order(raw) if raw else None
            except Exception:  # an unreadable record: its events go to the dead letters
                found[order_id] = None
        return found

    def _crowded(self, request: StreamOrder | None) -> bool:
        hooks = self.settings.webhooks
        return request is not None and \
            self._running[request.storefront] >= hooks.per_storefront * WAITING_PER_SLOT

    async def _take_new(self, shard: int, events: list[Event]) -> None:
        by_order: dict[str, list[Event]] = {}
        for event in events:
            by_order.setdefault(event[1][records.OUTBOX_ORDER].decode(), []).append(event)
        for order_id in [oid for oid in by_order if oid in self._inbox]:
            self._inbox[order_id] += by_order.pop(order_id)  # its task sends them next
        if not by_order:
            return
        waiting: Any = await self.redis.hmget(keys.webhook_waiting(shard), list(by_order))
        requests = await self._requests(list(by_order))
        for (order_id, order_events), backlog in zip(by_order.items(), waiting, strict=True):
            ids = [e[0] for e in order_events]
            if backlog:  # an earlier event of this order is still undelivered: behind it
                await self._append_waiting(shard, order_id, ids)
            elif self._crowded(requests[order_id]):
                await self._append_waiting(shard, order_id, ids)
                await self._retry_at(shard, order_id, time.time() + PUT_BEHIND_S)
            else:
                self._start(shard, order_id, requests[order_id], order_events, 0, False)

    async def _start_due(self, shard: int) -> None:
        due: Any = await self.redis.zrangebyscore(keys.webhook_retries(shard), "-inf",
                                                  time.time() * 1000, start=0, num=READ_COUNT)
        order_ids = [raw.decode() for raw in due if raw.decode() not in self._inbox]
        if not order_ids:
            return
        requests = await self._requests(order_ids)
        for order_id in order_ids:
            if self._crowded(requests[order_id]):
                await self._retry_at(shard, order_id, time.time() + PUT_BEHIND_S)
                continue
            joined: bytes = await self.redis.hget(  # type: ignore[assignment]
                keys.webhook_waiting(shard), order_id) or b""
            events: list[Event] = []
            for entry_id in [p for p in joined.split(b",") if p]:
                found: Any = await self.redis.xrange(keys.outbox(shard), entry_id, entry_id)
                if found:
                    events.append(found[0])
            attempts: bytes = await self.redis.hget(  # type: ignore[assignment]
                keys.webhook_attempts(shard), order_id) or b"0:0"
            self._start(shard, order_id, requests[order_id], events,
                        int(attempts.split(b":")[0]), True)

    def _start(self, shard: int, order_id: str, request: StreamOrder | None,
               events: list[Event], attempt: int, backlog: bool) -> None:
        storefront = request.storefront if request is not None else ""
        self._inbox[order_id] = []  # present while the task runs: the order is busy
        self._running[storefront] += 1
        task = asyncio.create_task(
            self._run(shard, order_id, request, events, attempt, backlog))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one order's deliveries --------------------------------------------------------------
    async def _run(self, shard: int, order_id: str, request: StreamOrder | None,
                   events: list[Event], attempt: int, backlog: bool) -> None:
        """Send the order's events in order, then any that came meanwhile; at the first
        failure the rest (and what comes meanwhile) wait for the order's next retry."""
        try:
            await self._run_events(shard, order_id, request, events, attempt, backlog)
        finally:  # at once, with no await before it: nothing can slip into a closed inbox
            self._inbox.pop(order_id, None)
            self._running[request.storefront if request is not None else ""] -= 1

    async def _run_events(self, shard: int, order_id: str, request: StreamOrder | None,
                          events: list[Event], attempt: int, backlog: bool) -> None:
        try:
            while True:
                sent, back_off_s = await self._send_in_order(shard, order_id, request, events)
                if sent < len(events):
                    await self._put_behind(shard, order_id, events[sent:], attempt + 1,
                                           back_off_s)
                    return
                if backlog:
                    await self._forget(shard, order_id)
                arrived, self._inbox[order_id] = self._inbox.get(order_id, []), []
                if not arrived:
                    return
                events, attempt, backlog = arrived, 0, False
        except asyncio.CancelledError:
            raise
        except Exception:  # never end the loop: this order waits for its next retry
            log.exception("webhooks of order %s failed unexpectedly; retrying later", order_id)
            await self._put_behind(shard, order_id, events, attempt + 1, 0.0)

    async def _put_behind(self, shard: int, order_id: str, rest: list[Event], attempt: int,
                          back_off_s: float) -> None:
        """The unsent events, and those that came meanwhile, wait for the order's next try;
        the order stays busy until they are written, so nothing overtakes them."""
        arrived, self._inbox[order_id] = self._inbox.get(order_id, []), []
        await self._schedule(shard, order_id, [e[0] for e in rest + arrived], attempt,
                             back_off_s)
        while self._inbox.get(order_id):
            late, self._inbox[order_id] = self._inbox[order_id], []
            await self._append_waiting(shard, order_id, [e[0] for e in late])

    async def _send_in_order(self, shard: int, order_id: str, request: StreamOrder | None,
                             events: list[Event]) -> tuple[int, float]:
        """(events delivered or dead-lettered from the start, the destination's back-off)."""
        for index, (entry_id, fields) in enumerate(events):
            body, why = await self._render(order_id, request, fields)
            if why:
                await self._dead_letter(shard, order_id, [entry_id], why)
                continue
            if body is not None and request is not None:
                headers = {"Content-Type": "application/json", "Kamigate-Event": EVENT}
                storefront = self.storefronts.get(request.storefront)
                if storefront is not None and storefront.webhook_secret:
                    headers["Kamigate-Signature"] = signature(storefront.webhook_secret, body,
                                                              int(time.time()))
                url = request.notify_url
                result = await self.sender.post(request.storefront, _host(url), url, body,
                                                headers)
                if not result.ok:
                    return index, result.back_off_s
            await self.redis.xack(keys.outbox(shard), GROUP, entry_id)
            self.delivered += 1
        return len(events), 0.0

    async def _render(self, order_id: str, request: StreamOrder | None,
                      fields: dict[bytes, bytes]) -> tuple[bytes | None, str]:
        """(the body to send, or None when there is no one to tell; why it cannot be sent)."""
        if request is None:
            return None, "the order's record does not read"
        if not request.notify_url:
            return None, ""
        storefront = self.storefronts.get(request.storefront)
        if storefront is None or not host_allowed(request.notify_url, storefront.notify_hosts):
            return None, "the notify_url's host is no longer allowed for this storefront"
        try:
            record = await records.read(self.redis, order_id)
            if record is None:
                return None, "the order's record does not read"
            status = as_status(fields[records.OUTBOX_STATUS].decode())
            view = order_view(
                self.directory, record.request, status=status, created_ms=record.created_ms,
                updated_ms=int(fields[records.OUTBOX_UPDATED]),
                codes=record.codes if status == "fulfilled" else None,
                reason=fields[records.OUTBOX_REASON].decode(),
                position=int(fields[records.OUTBOX_POSITION]) or None,
                expires_ms=int(fields[records.OUTBOX_EXPIRES]),
            )
        except (KeyError, ValueError, msgspec.DecodeError) as exc:
            return None, f"the event does not render ({type(exc).__name__})"
        if status == "fulfilled" and view.codes is None:
            return None, "its codes do not open (sealed with a key that is not configured)"
        return json_encode(view), ""

    # -- the backlog --------------------------------------------------------------------------
    async def _append_waiting(self, shard: int, order_id: str, ids: list[bytes]) -> None:
        current: bytes = await self.redis.hget(  # type: ignore[assignment]
            keys.webhook_waiting(shard), order_id) or b""
        joined = b",".join([p for p in current.split(b",") if p] + ids)
        await self.redis.hset(keys.webhook_waiting(shard), order_id, joined)

    async def _retry_at(self, shard: int, order_id: str, at_s: float) -> None:
        await self.redis.zadd(keys.webhook_retries(shard), {order_id: at_s * 1000})

    async def _schedule(self, shard: int, order_id: str, ids: list[bytes], attempt: int,
                        back_off_s: float) -> None:
        hooks = self.settings.webhooks
        raw: bytes | None = await self.redis.hget(  # type: ignore[assignment]
            keys.webhook_attempts(shard), order_id)
        now_ms = int(time.time() * 1000)
        since = int(raw.split(b":")[1]) if raw and int(raw.split(b":")[1]) else now_ms
        if now_ms - since > hooks.give_up_after_s * 1000:
            await self._dead_letter(shard, order_id, ids, f"no 2xx after {attempt} attempts")
            await self._forget(shard, order_id)
            log.warning("webhooks of order %s given up after %d attempts", order_id, attempt)
            return
        delay = max(back_off_s, retry_delay(attempt, hooks.first_retry_s, hooks.max_retry_s,
                                            self.rng))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(keys.webhook_waiting(shard), order_id, b",".join(ids))
        pipe.hset(keys.webhook_attempts(shard), order_id, f"{attempt}:{since}")
        pipe.zadd(keys.webhook_retries(shard), {order_id: now_ms + delay * 1000})
        await pipe.execute()

    async def _dead_letter(self, shard: int, order_id: str, ids: list[bytes], why: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for entry_id in ids:
            pipe.xadd(keys.webhook_dead(shard), {"o": order_id, "event": entry_id, "why": why})
            pipe.xack(keys.outbox(shard), GROUP, entry_id)
        await pipe.execute()
        log.warning("webhook event of order %s dead-lettered: %s", order_id, why)

    async def _forget(self, shard: int, order_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hdel(keys.webhook_waiting(shard), order_id)
        pipe.zrem(keys.webhook_retries(shard), order_id)
        pipe.hdel(keys.webhook_attempts(shard), order_id)
        await pipe.execute()


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
