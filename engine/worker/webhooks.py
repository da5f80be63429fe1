"""Webhooks: every change of an order with a notify_url, POSTed signed from the shard's outbox.

The scripts that change an order append the change to the shard's outbox stream in the same
atomic call, so no change is lost. The worker that owns the shard sends them:

- at least once: an event is acknowledged in the outbox only after a 2xx answer; what another
  worker read and never acknowledged is claimed once it has been idle longer than two attempts
  (that worker died or lost the shard), and what this one read before a failed round is read
  again;
- in order per order: one delivery task per order at a time; while an order has an
  undelivered event, its later events wait behind it (webhook_backlog), and the backlog is
  retried as a whole;
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from engine.config.directory import Directory
from engine.config.live import page_secret
from engine.config.settings import Settings
from engine.store import keys, records
from engine.wire import StreamOrder, decode_stream_order
from engine.worker.webhook_backlog import GROUP, Backlog, Event
from engine.worker.webhook_render import render
from engine.worker.webhook_sender import WebhookSender, retry_delay, signature

log = logging.getLogger("kamigate.webhooks")
READ_COUNT = 200
WAITING_PER_SLOT = 4  # orders of one storefront waiting per slot before new ones are put behind
PUT_BEHIND_S = 1.0
RECLAIM_S = 5.0  # how often another consumer's idle events are looked for


class Dispatcher:
    """Sends the outbox of the shards the worker owns."""

    def __init__(self, settings: Settings, redis: Redis, consumer: str,
                 rng: random.Random | None = None) -> None:
        self.redis = redis
        self.consumer = consumer
        self.page_secret = ""  # read from Redis at the first round
        self.sender = WebhookSender(settings.webhooks)
        self.backlog = Backlog(redis)
        self.use(settings)
        self.rng = rng or random.Random()
        self._groups: set[int] = set()
        self._inbox: dict[str, list[Event]] = {}  # order id -> events that came while busy
        self._holding: dict[str, set[bytes]] = {}  # order id -> entry ids its task has
        self._running = Counter[str]()  # storefront -> orders with a delivery task
        self._tasks: dict[asyncio.Task[None], int] = {}  # task -> shard
        self._reclaimed_at: dict[int, float] = {}
        self._reread: set[int] = set()  # shards whose round failed after reading
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
        await self._cancel(list(self._tasks))
        await self.sender.close()

    async def _cancel(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
        # a shard this worker lost: its deliveries stop here, the new owner claims the events;
        # should that be this worker again (a blip of the store), it reads its own again
        lost = [(t, s) for t, s in self._tasks.items() if s not in shards]
        self._reread.update(s for _, s in lost)
        await self._cancel([t for t, _ in lost])
        for shard in shards:
            try:
                await self._shard_round(shard)
            except Exception:
                self._reread.add(shard)  # what was read and not yet placed is read again
                raise

    async def _shard_round(self, shard: int) -> None:
        if shard not in self._groups:
            with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists
                await self.redis.xgroup_create(keys.outbox(shard), GROUP, id="0",
                                               mkstream=True)
            self._groups.add(shard)
        await self._reclaim(shard)
        await self._start_due(shard)
        reply: Any = await self.redis.xreadgroup(
            GROUP, self.consumer, {keys.outbox(shard): ">"}, count=READ_COUNT)
        if reply:
            await self._take_new(shard, reply[0][1])

    async def _reclaim(self, shard: int) -> None:
        """Events this worker read before a failed round, and events other consumers read and
        left idle for longer than two attempts (they died, or lost the shard)."""
        if shard in self._reread:
            self._reread.discard(shard)
            after = "0"
            while True:
                reply: Any = await self.redis.xreadgroup(
                    GROUP, self.consumer, {keys.outbox(shard): after}, count=READ_COUNT)
                entries = reply[0][1] if reply else []
                if not entries:
                    break
                await self._take_new(shard, entries)
                after = entries[-1][0]
        now = time.monotonic()
        if now - self._reclaimed_at.get(shard, -RECLAIM_S) < RECLAIM_S:
            return
        self._reclaimed_at[shard] = now
        idle_ms = int(2 * self.settings.webhooks.timeout_s * 1000) + 1000
        summary: Any = await self.redis.xpending(keys.outbox(shard), GROUP)
        for row in summary.get("consumers") or []:
            name = row["name"].decode() if isinstance(row["name"], bytes) else row["name"]
            if name == self.consumer:
                continue
            while True:
                pending: Any = await self.redis.xpending_range(
                    keys.outbox(shard), GROUP, min="-", max="+", count=READ_COUNT,
                    consumername=name, idle=idle_ms)
                ids = [p["message_id"] for p in pending]
                if not ids:
                    break
                claimed: Any = await self.redis.xclaim(keys.outbox(shard), GROUP,
                                                       self.consumer, idle_ms, ids)
                gone = [i for i in ids if i not in {e[0] for e in claimed if e[1]}]
                if gone:  # trimmed away meanwhile: nothing left to send
                    await self.redis.xack(keys.outbox(shard), GROUP, *gone)
                await self._take_new(shard, [e for e in claimed if e[1]])
                if len(ids) < READ_COUNT:
                    break

    # -- starting deliveries ----------------------------------------------------------------
    async def _requests(self, order_ids: Sequence[str]) -> dict[str, StreamOrder | None]:
        """Each order's request (storefront, notify_url); None for one that does not read,
        and for a buyer's event group (its events name their storefront)."""
        pipe = self.redis.pipeline(transaction=False)
        order_ids = [o for o in order_ids if not o.startswith(records.EVENT_GROUP)]
        for order_id in order_ids:
            pipe.hget(keys.order(order_id, keys.shard_of_order(order_id) or 0), records.REQUEST)
        found: defaultdict[str, StreamOrder | None] = defaultdict(lambda: None)
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
            holding = self._holding[order_id]
            fresh = [e for e in by_order.pop(order_id) if e[0] not in holding]
            holding.update(e[0] for e in fresh)
            self._inbox[order_id] += fresh  # its task sends them next
        if not by_order:
            return
        waiting = await self.backlog.waiting(shard, list(by_order))
        requests = await self._requests(list(by_order))
        for (order_id, order_events), backlog in zip(by_order.items(), waiting, strict=True):
            ids = [e[0] for e in order_events]
            if backlog:  # an earlier event of this order is still undelivered: behind it
                await self.backlog.append(shard, order_id, ids)
            elif self._crowded(requests[order_id]):
                await self.backlog.append(shard, order_id, ids)
                await self.backlog.retry_at(shard, order_id, (time.time() + PUT_BEHIND_S) * 1000)
            else:
                self._start(shard, order_id, requests[order_id], order_events, 0, False)

    async def _start_due(self, shard: int) -> None:
        due = await self.backlog.due(shard, int(time.time() * 1000), READ_COUNT)
        order_ids = [oid for oid in due if oid not in self._inbox]
        if not order_ids:
            return
        requests = await self._requests(order_ids)
        for order_id in order_ids:
            if self._crowded(requests[order_id]):
                await self.backlog.retry_at(shard, order_id, (time.time() + PUT_BEHIND_S) * 1000)
                continue
            events = await self.backlog.events(shard, await self.backlog.ids(shard, order_id))
            attempt, _ = await self.backlog.attempts(shard, order_id)
            self._start(shard, order_id, requests[order_id], events, attempt, True)

    def _start(self, shard: int, order_id: str, request: StreamOrder | None,
               events: list[Event], attempt: int, backlog: bool) -> None:
        self._inbox[order_id] = []  # present while the task runs: the order is busy
        self._holding[order_id] = {e[0] for e in events}
        self._running[request.storefront if request is not None else ""] += 1
        task = asyncio.create_task(
            self._run(shard, order_id, request, events, attempt, backlog))
        self._tasks[task] = shard
        task.add_done_callback(lambda done: self._tasks.pop(done, None))

    # -- one order's deliveries --------------------------------------------------------------
    async def _run(self, shard: int, order_id: str, request: StreamOrder | None,
                   events: list[Event], attempt: int, backlog: bool) -> None:
        """Send the order's events in order, then any that came meanwhile; at the first
        failure the rest (and what comes meanwhile) wait for the order's next retry."""
        try:
            await self._run_events(shard, order_id, request, events, attempt, backlog)
        finally:  # at once, with no await before it: nothing can slip into a closed inbox
            self._inbox.pop(order_id, None)
            self._holding.pop(order_id, None)
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
                    await self.backlog.forget(shard, order_id)
                arrived, self._inbox[order_id] = self._inbox.get(order_id, []), []
                if not arrived:
                    return
                events, attempt, backlog = arrived, 0, False
        except asyncio.CancelledError:
            raise
        except RedisError as exc:  # the store failed, or its replicas lag ([redis] wait_replicas)
            log.warning("webhooks of order %s wait for the store (%s); retrying later",
                        order_id, exc)
            await self._put_behind(shard, order_id, events, attempt + 1, 0.0)
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
            await self.backlog.append(shard, order_id, [e[0] for e in late])

    async def _send_in_order(self, shard: int, order_id: str, request: StreamOrder | None,
                             events: list[Event]) -> tuple[int, float]:
        """(events delivered or dead-lettered from the start, the destination's back-off)."""
        for index, (entry_id, fields) in enumerate(events):
            found, why = await render(self.redis, self.directory, self.storefronts, order_id,
                                      request, entry_id, fields)
            if why:
                await self.backlog.dead_letter(shard, order_id, [entry_id], why)
                continue
            if found is not None:
                headers = {"Content-Type": "application/json", "Kamigate-Event": found.event}
                storefront = self.storefronts.get(found.storefront)
                if storefront is not None and storefront.webhook_secret:
                    headers["Kamigate-Signature"] = signature(
                        storefront.webhook_secret, found.body, int(time.time()))
                result = await self.sender.post(found.storefront, _host(found.url), found.url,
                                                found.body, headers)
                if not result.ok:
                    return index, result.back_off_s
            await self.redis.xack(keys.outbox(shard), GROUP, entry_id)
            self.delivered += 1
        return len(events), 0.0

    async def _schedule(self, shard: int, order_id: str, ids: list[bytes], attempt: int,
                        back_off_s: float) -> None:
        hooks = self.settings.webhooks
        _, since = await self.backlog.attempts(shard, order_id)
        now_ms = int(time.time() * 1000)
        since = since or now_ms
        if now_ms - since > hooks.give_up_after_s * 1000:
            await self.backlog.dead_letter(shard, order_id, ids,
                                           f"no 2xx after {attempt} attempts")
            await self.backlog.forget(shard, order_id)
            log.warning("webhooks of order %s given up after %d attempts", order_id, attempt)
            return
        delay = max(back_off_s, retry_delay(attempt, hooks.first_retry_s, hooks.max_retry_s,
                                            self.rng))
        await self.backlog.retry(shard, order_id, ids, attempt, since, now_ms + delay * 1000)


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
