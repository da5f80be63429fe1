"""The stream worker: read → reclaim → match → claim → settle, one shard batch at a time.

Each shard has one active owner (a lease in Redis). A worker that dies leaves its entries
pending; whoever takes the lease next reclaims them (XAUTOCLAIM) and runs them again, which is
safe because the claim is idempotent per order id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from engine import failpoints
from engine.clock import now_ms
from engine.config.live import Follower, boot
from engine.config.settings import Settings
from engine.config.watch import keep_config
from engine.store import connection, keys, scripts
from engine.store.heartbeat import heartbeat
from engine.store.records import ENTRY_KICK, ENTRY_PAYLOAD
from engine.tasks import stop_tasks
from engine.wallet.compensation import late_before
from engine.wire import StreamOrder
from engine.worker import matching
from engine.worker.book import lines_to_rerun
from engine.worker.claim_plan import PARKED, StalePlan, apply_plan, build_plan
from engine.worker.drain import line_name
from engine.worker.housekeeping import Housekeeping
from engine.worker.matching_types import FILL, QUEUE, MatchOrder
from engine.worker.pause_gate import set_aside
from engine.worker.poison import read_entries, sort_out
from engine.worker.replay import replay
from engine.worker.restock import Restocker
from engine.worker.settlement import Settlement
from engine.worker.shard_view import ShardView
from engine.worker.webhooks import Dispatcher

log = logging.getLogger("kamigate.worker")

Entry = tuple[bytes, dict[bytes, bytes]]
MAX_STALE_RETRIES = 50
CHORE_INTERVAL_S = 0.05
CLUSTER_IDLE_MS = 5  # a worker on a cluster polls its shards' streams this often when idle
WEBHOOK_INTERVAL_S = 0.1


class Worker:
    """Consume every shard this process holds the lease of.

    Parameters: settings (the running config), redis (commands), blocking (a client whose
    socket timeout exceeds the block time, for XREADGROUP).
    """

    def __init__(self, settings: Settings, redis: Redis, blocking: Redis) -> None:
        self.settings = settings
        self.redis = redis
        self.blocking = blocking
        self.worker_id = f"w-{secrets.token_hex(4)}"
        self.owned: set[int] = set()
        self.views: dict[int, ShardView] = {}
        self.housekeeping = Housekeeping(settings, redis)
        self.settlement = Settlement(settings, redis, self.worker_id)
        self.dispatcher = Dispatcher(settings, redis, self.worker_id)
        self.restocker = Restocker(settings, redis)
        self._last_lease = 0.0
        self._last_reclaim = 0.0
        self.batches = 0

    def use(self, settings: Settings) -> None:
        """Take a new config between batches (the event loop runs one thing at a time)."""
        self.settings = settings
        self.housekeeping.use(settings)
        self.settlement.settings = settings
        self.dispatcher.use(settings)
        self.restocker.use(settings)
        # cached views count only what the old rules needed (e.g. purchases of SKUs without
        # a buyer limit): read everything anew under the new ones
        self.views.clear()

    # -- entry points ---------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until `stop` is set; Redis outages are waited out, never fatal."""
        log.info("worker %s started; %s", self.worker_id, matching.describe())
        chores = asyncio.create_task(self._chores(stop))
        hooks = asyncio.create_task(self._webhooks(stop))
        try:
            while not stop.is_set():
                try:
                    await self.step()
                except (RedisConnectionError, OSError, TimeoutError) as exc:
                    log.warning("Redis unreachable (%s); retrying", exc)
                    self.owned.clear()
                    await asyncio.sleep(0.25)
        finally:
            await stop_tasks([chores, hooks])
            await self.dispatcher.close()
            await self.restocker.close()
        await self.release()

    async def _webhooks(self, stop: asyncio.Event) -> None:
        """Start deliveries from the outbox of the owned shards; they run as tasks of their
        own, so a slow receiver delays nobody. Nothing ends this loop but `stop`."""
        while not stop.is_set():
            try:
                await self.dispatcher.round(sorted(self.owned))
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("webhook round skipped (%s)", type(exc).__name__)
            except Exception:
                log.exception("webhook round failed; the next one runs as usual")
            await asyncio.sleep(WEBHOOK_INTERVAL_S)

    async def _chores(self, stop: asyncio.Event) -> None:
        """Beside the batches: admit overflow tickets at the rate, expire what is due.
        Nothing ends this loop but `stop`."""
        while not stop.is_set():
            await asyncio.sleep(CHORE_INTERVAL_S)
            try:
                await self.chores()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("housekeeping skipped (%s)", type(exc).__name__)
            except Exception:
                log.exception("housekeeping round failed; the next one runs as usual")

    async def chores(self, at_ms: int | None = None) -> tuple[int, int]:
        """One round for every owned shard: (tickets released, orders expired). `at_ms` runs
        it as if the clock said so (tests and tools step the worker through time)."""
        owned, now = sorted(self.owned), now_ms() if at_ms is None else at_ms
        released, expired = await self.housekeeping.round(owned, at_ms)
        await self.settlement.round(owned, now)
        await self.restocker.round(owned, now, force=at_ms is not None)
        return released, expired

    async def drain(self, max_batches: int = 10_000) -> int:
        """Burst mode for tests and tools: process until every stream is empty; batches run."""
        done = 0
        while done < max_batches:
            await self.maintain_leases(force=True)
            ran = await self.read_and_process(block_ms=None)
            if not ran:
                return done
            done += ran
        return done

    async def step(self) -> None:
        await self.maintain_leases()
        if not self.owned:
            await asyncio.sleep(self.settings.worker.lease_s / 3)
            return
        await self.read_and_process(block_ms=self.settings.worker.block_ms)

    # -- leases and reclaim ---------------------------------------------------------------------
    async def maintain_leases(self, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        lease_s = self.settings.worker.lease_s
        if not force and loop.time() - self._last_lease < lease_s / 3:
            return
        self._last_lease = loop.time()
        ttl_ms = int(lease_s * 1000)
        calls: list[scripts.Call] = [
            (scripts.LEASE, [keys.lease(s)], [self.worker_id, ttl_ms])
            for s in range(self.settings.redis.shards)
        ]
        results = await scripts.run_pipelined(self.redis, calls)
        for shard, held in enumerate(results):
            if held == 1 and shard not in self.owned:
                await self._take_shard(shard)
            elif held != 1:
                self.owned.discard(shard)
                self.restocker.forget(shard)
        await heartbeat(self.redis, keys.workers(), self.worker_id, max(ttl_ms, 5000))
        idle_ms = self.settings.worker.reclaim_idle_ms
        if loop.time() - self._last_reclaim >= idle_ms / 2000:
            # Entries read by a consumer that lost its lease without dying (a long pause)
            # would otherwise wait for the next change of owner.
            self._last_reclaim = loop.time()
            for shard in sorted(self.owned):
                await self.reclaim(shard, min_idle_ms=idle_ms)

    async def _take_shard(self, shard: int) -> None:
        with contextlib.suppress(ResponseError):  # BUSYGROUP: it exists already
            await self.redis.xgroup_create(keys.stream(shard), keys.GROUP, id="0", mkstream=True)
        self.owned.add(shard)
        self.views[shard] = ShardView(shard, self.settings.worker.line_scan)
        await self.reclaim(shard, min_idle_ms=0)
        log.info("worker %s owns shard %d", self.worker_id, shard)

    async def reclaim(self, shard: int, min_idle_ms: int) -> int:
        """Take over entries another consumer read but never acknowledged, and run them."""
        start, total = "0-0", 0
        while True:
            reply: Any = await self.redis.xautoclaim(
                keys.stream(shard), keys.GROUP, self.worker_id, min_idle_ms, start, count=500
            )
            start, entries = reply[0], reply[1]
            entries = await sort_out(self.redis, shard, entries)
            if entries:
                total += len(entries)
                await self.process(shard, entries)
            if start in (b"0-0", "0-0"):
                return total

    async def release(self) -> None:
        for shard in sorted(self.owned):
            with contextlib.suppress(RedisError, OSError):
                if await self.redis.get(keys.lease(shard)) == self.worker_id.encode():
                    await self.redis.delete(keys.lease(shard))
        self.owned.clear()

    # -- the batch --------------------------------------------------------------------------------
    async def read_and_process(self, block_ms: int | None) -> int:
        streams = {keys.stream(s): ">" for s in sorted(self.owned)}
        if not streams:
            return 0
        reply: Any = await self._read(streams, block_ms)
        ran = 0
        for name, entries in reply or []:
            stream_name = name.decode() if isinstance(name, bytes) else name
            shard = next(s for s in self.owned if keys.stream(s) == stream_name)
            if entries:
                failpoints.hit("worker.after_read")
                await self.process(shard, entries, fresh=True)
                ran += 1
        return ran

    async def _read(self, streams: dict[str, str], block_ms: int | None) -> Any:
        count = self.settings.worker.batch_size
        if not connection.is_cluster(self.redis) or len(streams) == 1:
            return await self.blocking.xreadgroup(
                keys.GROUP, self.worker_id, streams,  # type: ignore[arg-type]
                count=count, block=block_ms)
        # On a cluster one XREADGROUP reads one slot: each shard's stream is read on its own,
        # without blocking, and an idle round waits a little before the next
        replies: list[Any] = []
        for name in streams:
            replies += await self.blocking.xreadgroup(
                keys.GROUP, self.worker_id, {name: ">"}, count=count) or []
        if block_ms and not any(entries for _, entries in replies):
            await asyncio.sleep(min(block_ms, CLUSTER_IDLE_MS) / 1000)
        return replies

    async def process(self, shard: int, entries: Sequence[Entry], fresh: bool = False) -> None:
        """Match, claim and settle one shard batch.

        `fresh` entries were never delivered before, so their orders can only be pending (or
        cancelled, which the claim script notices); reclaimed entries are checked first.
        """
        await self.housekeeping.refresh_board(first=True)  # pauses hold from the first batch
        orders, arrivals, kicks, buried = await read_entries(self.redis, shard, entries)
        await self._claim(shard, orders, arrivals, kicks,
                          [e[0] for e in entries if e[0] not in buried], fresh)
        self.batches += 1
        # How long orders waited in the stream: the entry id is the moment of admission.
        meter, now = self.housekeeping.meter(shard), now_ms()
        for entry_id, fields in entries:
            if ENTRY_PAYLOAD in fields:
                meter.delay(now - int(entry_id.split(b"-")[0]))

    async def _claim(
        self, shard: int, orders: list[StreamOrder], arrivals: dict[str, int], kicks: set[str],
        ack: list[bytes], fresh: bool,
    ) -> None:
        policies = {s.id: s for s in self.settings.skus}
        ttl_s = {s.id: s.queue_ttl_s for s in self.settings.skus}
        skus = kicks | {o.sku for o in orders}
        for attempt in range(MAX_STALE_RETRIES):
            view = self.views.setdefault(shard, ShardView(shard, self.settings.worker.line_scan))
            if attempt == 0:
                view.forget(kicks)  # a kick means stock or the line changed: read them anew
            else:
                view.forget(skus)
            snapshot = await view.snapshot(self.redis, policies, skus, orders,
                                           check_statuses=not fresh)
            status_of = snapshot.statuses.get
            live = [o for o in orders if status_of(o.order_id, "pending") == "pending"]
            decided = [o.order_id for o in orders
                       if status_of(o.order_id, "pending") not in ("pending", "")]
            requests = {o.order_id: o for o in live}
            tickets = {t.request.order_id: t.request
                       for state in snapshot.skus.values() for t in state.tickets}
            everyone = requests | tickets
            now = now_ms()
            matched, parked, parking = set_aside(
                self.housekeeping.board, snapshot.tickets() + [
                    MatchOrder(o.order_id, o.sku, o.qty, o.tier, arrivals[o.order_id], o.buyer)
                    for o in live], everyone, ttl_s, now)
            channels = {oid: o.reply_to for oid, o in everyone.items()}
            notify = {oid: o.notify_url for oid, o in everyone.items() if o.notify_url}
            books = snapshot.books(policies, now // 1000, matched)
            batch = matched + parked
            decisions = matching.match_batch(matched, books) + [PARKED] * len(parked)
            plan = build_plan(shard, policies, snapshot, batch, requests, decisions, now,
                              channels, ack, notify, late_before(self.settings, now), tickets,
                              parking)
            try:
                failpoints.hit("worker.before_claim")
                await apply_plan(self.redis, plan, now)
                failpoints.hit("worker.after_claim")
            except StalePlan as stale:
                log.debug("plan refused (%s); matching again (%d)", stale, attempt + 1)
                fresh = False  # re-read statuses: an order may have been cancelled
                await asyncio.sleep(min(0.001 * attempt, 0.05))
                continue
            view.applied(snapshot, batch, decisions, set(requests))
            meter = self.housekeeping.meter(shard)
            for order, decision in zip(batch, decisions, strict=True):
                if order.order_id not in requests and decision.action == FILL:
                    meter.record(line_name("sold_out", order.sku))
            if decided:
                await replay(self.redis, decided, {o.order_id: o.reply_to for o in orders})
            moved = {o.sku for o, d in zip(batch, decisions, strict=True)
                     if o.order_id not in requests and d.action != QUEUE}
            for sku in lines_to_rerun(snapshot, moved, self.settings.worker.line_scan,
                                      now // 1000):
                await self.redis.xadd(keys.stream(shard), {ENTRY_KICK: sku})
            return
        raise RedisError(f"shard {shard}: the claim plan went stale {MAX_STALE_RETRIES} times")


async def run_worker(settings: Settings, stop: asyncio.Event | None = None,
                     config_file: str | None = None) -> None:
    """`kamigate worker`: connect, check the server, adopt and follow the fleet's config,
    serve until stopped. config_file: reloaded on SIGHUP (the front door watches it)."""
    url = connection.resolve_url(settings.redis.url, settings.redis.data_dir)
    redis = await connection.connect(url, cluster=settings.redis.cluster,
                                     wait_replicas=settings.redis.wait_replicas,
                                     wait_timeout_ms=settings.redis.wait_timeout_ms)
    blocking = connection.client(url, timeout=settings.worker.block_ms / 1000 + 10,
                                 cluster=settings.redis.cluster)
    await connection.check_server(redis)
    running = await boot(redis, config_file, settings)
    worker = Worker(running.settings, redis, blocking)
    follower = Follower(redis, running, lambda r: worker.use(r.settings))
    stop = stop or asyncio.Event()
    try:
        async with keep_config(redis, follower, config_file, watch=False):
            await worker.run(stop)
    finally:
        await redis.aclose()
        await blocking.aclose()
