"""The coalescing stream writer: orders go to Redis in pipelines with one admit script call per
shard, never one round trip per request.

What arrives in one event-loop tick leaves in one pipeline. At most MAX_IN_FLIGHT pipelines are
out at once; what arrives meanwhile waits for the next free slot and leaves together, so under
load the batches grow instead of the number of round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine import keys, scripts
from engine.clock import now_ms
from engine.scripts import Call
from engine.wire import StreamOrder, msgpack_encode

IDEMPOTENCY_TTL_S = 24 * 3600
MAX_IN_FLIGHT = 2

Admit = tuple[StreamOrder, "asyncio.Future[str]", bool]


class KeyReservation(msgspec.Struct, frozen=True):
    order_id: str
    digest: str
    created: bool


class Ingest:
    """Queue admissions and key reservations; flush them once per loop tick."""

    def __init__(self, redis: Redis, shards: int) -> None:
        self.redis = redis
        self.shards = shards
        self._admits: dict[int, list[Admit]] = {}
        self._reserves: list[tuple[Call, asyncio.Future[KeyReservation]]] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()

    def admit(self, order: StreamOrder, shard: int, again: bool = False) -> asyncio.Future[str]:
        """Admit one order; the future gives "pending", or the status an earlier admit left.

        `again` marks an order id that may have been admitted before (idempotent re-admit).
        """
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._admits.setdefault(shard, []).append((order, future, again))
        self._schedule()
        return future

    def reserve_key(
        self, storefront: str, key: str, order_id: str, digest: str
    ) -> asyncio.Future[KeyReservation]:
        """Reserve an Idempotency-Key, or learn which order already holds it."""
        shard = keys.shard_of_idempotency(storefront, key, self.shards)
        call: Call = (
            scripts.IDEMPOTENCY,
            [keys.idempotency(shard, storefront, key)],
            [order_id, digest, IDEMPOTENCY_TTL_S],
        )
        future: asyncio.Future[KeyReservation] = asyncio.get_running_loop().create_future()
        self._reserves.append((call, future))
        self._schedule()
        return future

    def _schedule(self) -> None:
        if not self._scheduled and len(self._inflight) < MAX_IN_FLIGHT:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._admits and not self._reserves:
            return
        admits, self._admits = self._admits, {}
        reserves, self._reserves = self._reserves, []
        task = asyncio.create_task(self._send(admits, reserves))
        self._inflight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._admits or self._reserves:
            self._schedule()

    async def _send(
        self,
        admits: dict[int, list[Admit]],
        reserves: list[tuple[Call, asyncio.Future[KeyReservation]]],
    ) -> None:
        calls: list[Call] = [call for call, _ in reserves]
        groups = list(admits.items())
        now = now_ms()
        for shard, items in groups:
            record_keys = [keys.order(order.order_id, shard) for order, _, _ in items]
            payloads = [msgpack_encode(order) for order, _, _ in items]
            index = msgpack_encode([
                (order.order_id, len(p), 1 if again else 0)
                for (order, _, again), p in zip(items, payloads, strict=True)
            ])
            calls.append(
                (scripts.ADMIT, [keys.stream(shard), keys.sequence(shard), *record_keys],
                 [now, index, b"".join(payloads)])
            )
        try:
            results = await scripts.run_pipelined(self.redis, calls)
        except Exception as exc:
            _fail_all(reserves, admits, exc)
            return
        for (_, future), result in zip(reserves, results, strict=False):
            if isinstance(result, Exception):
                _set_exception(future, result)
            else:
                oid, digest, created = result
                _set_result(future, KeyReservation(oid.decode(), digest.decode(), created == 1))
        for (_, items), result in zip(groups, results[len(reserves):], strict=True):
            if isinstance(result, Exception):
                for _, waiter, _ in items:
                    _set_exception(waiter, result)
                continue
            for (_, waiter, _), status in zip(items, result, strict=True):
                _set_result(waiter, status.decode())

    async def close(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)


def _set_result(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _fail_all(
    reserves: Sequence[tuple[Call, asyncio.Future[KeyReservation]]],
    admits: dict[int, list[Admit]],
    exc: BaseException,
) -> None:
    for _, future in reserves:
        _set_exception(future, exc)
    for items in admits.values():
        for _, f, _ in items:
            _set_exception(f, exc)
