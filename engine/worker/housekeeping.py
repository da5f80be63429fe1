"""The worker's rounds beside the batches: admit overflow tickets at the rate, move parked
tickets on when their pause ends (and, on shard 0, announce and audit the pauses), expire
what is due (tickets, holds, lots of stock, decided orders past the retention), publish
drain rates, tell storefronts of late tickets (delays), trim streams."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from redis.asyncio import Redis

from engine.clock import now_ms
from engine.config.settings import Settings
from engine.controls import maintenance, pauses
from engine.controls.maintenance import MaintenanceState
from engine.stock import lots
from engine.store import audit, keys, records
from engine.worker import parking, pause_watch, retention
from engine.worker.delays import DelayWatch
from engine.worker.drain import DrainMeter
from engine.worker.waiting import Releaser, sweep, trim_stream
from engine.worker.webhook_backlog import GROUP as WEBHOOK_GROUP

PAUSE_REFRESH_S = 0.5
AUDIT_TRIM_S = 60.0


class Housekeeping:
    """One per worker; `round` runs every few tens of milliseconds for the owned shards."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.redis = redis
        self.meters: dict[int, DrainMeter] = {}
        self.board = pauses.PauseBoard()
        self.closed: tuple[MaintenanceState, dict[str, MaintenanceState]] = (
            MaintenanceState(), {})
        self._board_at = 0.0
        self._board_ms = 0
        self._trimmed_at = 0.0
        self.delays = DelayWatch(settings)
        self.use(settings)

    def use(self, settings: Settings) -> None:
        self.settings = settings
        self.releaser = Releaser(settings, time.monotonic())
        self.delays.use(settings)
        self._board_at = 0.0  # pauses of the new config at the next round

    def skus_of(self, shard: int) -> list[str]:
        shards = self.settings.redis.shards
        return [s.id for s in self.settings.skus if keys.shard_of_sku(s.id, shards) == shard]

    async def _watch_low_stock(self, shard: int, now: int) -> None:
        groups = [f"{records.EVENT_GROUP}{s.id}:stock" for s in self.settings.storefronts
                  if s.events_url]
        for sku in self.settings.skus:
            if sku.low_stock and keys.shard_of_sku(sku.id, self.settings.redis.shards) == shard:
                change, available = await lots.watch_low(self.redis, shard, sku.id,
                                                         sku.low_stock, groups, now)
                if change:
                    await audit.record(self.redis, "worker", "stock.low" if change > 0
                                       else "stock.recovered", {"sku": sku.id,
                                                                "available": available,
                                                                "low_stock": sku.low_stock})

    async def refresh_board(self, at_ms: int | None = None, first: bool = False) -> bool:
        """Look at the pauses again when due (or `at_ms` drives the clock); `first`: only if
        they were never looked at under this config (a batch before the first round)."""
        clock = time.monotonic()
        due = self._board_at == 0.0 if first else clock - self._board_at >= PAUSE_REFRESH_S
        if at_ms is None and not due:
            return False
        now = now_ms() if at_ms is None else at_ms
        self.board.refresh(self.settings, await pauses.load(self.redis),
                           datetime.fromtimestamp(now / 1000, UTC))
        self.closed = (await maintenance.load(self.redis, self.settings.maintenance),
                       await maintenance.load_scoped(self.redis))
        self._board_at, self._board_ms = clock, now
        return True

    def held(self, storefront: str, sku: str) -> bool:
        """A parked line of this storefront and SKU still waits: a pause or a maintenance
        window that queues is in force (as of the last refresh)."""
        return self.board.lookup(storefront, sku) is not None or maintenance.holds(
            *self.closed, storefront, sku, self._board_ms) is not None

    def meter(self, shard: int) -> DrainMeter:
        meter = self.meters.get(shard)
        if meter is None:
            meter = self.meters[shard] = DrainMeter(time.monotonic())
        return meter

    async def round(self, shards: list[int], at_ms: int | None = None) -> tuple[int, int]:
        """(tickets released, orders expired); `at_ms`: as if the clock said so (pauses are
        then looked at again whatever the last refresh)."""
        released = expired = 0
        now = now_ms() if at_ms is None else at_ms
        clock = time.monotonic()
        moving = await self.refresh_board(at_ms)
        if moving and pause_watch.OWNER_SHARD in shards:
            await pause_watch.watch(self.redis, self.settings, self.board, now)
        for shard in shards:
            meter = self.meter(shard)
            if moving:
                await parking.unpark(self.redis, shard, self.held)
                await retention.retire(self.redis, shard, now, self.settings.orders.retention_s)
            released += await self.releaser.release(self.redis, shard, now, clock, meter)
            expired += await sweep(self.redis, shard, now)
            meter.tick(clock)
            await self.delays.round(self.redis, shard, now, meter.rates)
            if meter.due(clock):
                await meter.publish(self.redis, shard, now)
                await lots.expire_lots(self.redis, shard, self.skus_of(shard), now // 1000)
                await self._watch_low_stock(shard, now)
                await trim_stream(self.redis, keys.stream(shard), keys.GROUP)
                await trim_stream(self.redis, keys.outbox(shard), WEBHOOK_GROUP)
        if clock - self._trimmed_at >= AUDIT_TRIM_S and shards:
            self._trimmed_at = clock
            await audit.trim(self.redis, self.settings.redis.shards,
                             self.settings.audit.retention_s)
        return released, expired
