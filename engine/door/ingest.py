"""The coalescing stream writer: orders go to Redis in pipelines with one admit script call per
shard, never one round trip per request.

What arrives in one event-loop tick leaves in one pipeline. At most MAX_IN_FLIGHT pipelines are
out at once; what arrives meanwhile waits for the next free slot and leaves together, so under
load the batches grow instead of the number of round trips.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.metrics import WriterCounts
from engine.store import keys, scripts
from engine.store.records import line_score
from engine.store.scripts import Call, KeyArg
from engine.wire import AdmitStatus, StreamOrder, TicketReason, msgpack_encode

T = TypeVar("T")
MAX_IN_FLIGHT = 2
FULL_MEMORY_S = 0.1


class Admitted(msgspec.Struct, frozen=True):
    """What admit.lua did with an order: pending (in the stream), queued (an overflow ticket
    at `position`), full (no room in the line), abandoned (its id was fenced after its points
    were given back), or an earlier status (a re-admit)."""

    status: AdmitStatus
    position: int = 0


class AdmitItem(msgspec.Struct, array_like=True, frozen=True):
    """One order of an admit.lua call (ARGV[2] is a msgpack array of these).

    admit.lua names the same fields in the same order in its header; tests/test_lua_contracts.py
    holds the two together.
    """

    order_id: str
    payload_length: int  # bytes of its msgpack StreamOrder in ARGV[3]
    ticket: bool  # the door wants a ticket (a capacity bucket was empty, a pause, a review)
    score_base: int  # line_score(tier, 0): its place in a line is score_base + arrival
    sku: str
    ttl_ms: int  # how long a ticket may wait
    notify: bool  # it has a notify_url: marked on its record, its changes go to the outbox
    line: int  # which of the call's lines it waits in if it becomes a ticket (1-based)
    why: TicketReason  # "overflow", "paused" (a parked line) or "review"
    parking: str  # the parked line's member of the shard's parked set: "<storefront>:<sku>"
    review: bool  # a paused ticket that goes to review when the pause ends
    settle: bool  # its decision moves points: marked 'pt' on its record


class Admit(msgspec.Struct):
    order: StreamOrder
    future: asyncio.Future[Admitted]
    ticket: bool
    ttl_ms: int
    why: TicketReason
    review: bool

    def line(self, shard: int) -> str:
        """The line this order waits in if it becomes a ticket."""
        order = self.order
        return keys.ticket_line(self.why, order.sku, order.storefront, shard)


class KeyReservation(msgspec.Struct, frozen=True):
    order_id: str
    digest: str
    created: bool


class Ingest:
    """Queue admissions and key reservations; flush them once per loop tick."""

    def __init__(self, redis: Redis, shards: int, capacity: int = 0,
                 counts: WriterCounts | None = None) -> None:
        self.redis = redis
        self.counts = counts or WriterCounts()
        self.shards = shards
        self.capacity = capacity  # per overflow line; 0 = no waiting room
        self._admits: dict[int, list[Admit]] = {}
        # calls answered before an admission (keys, points), each with how to read its answer
        self._reserves: list[tuple[Call, asyncio.Future[Any], Callable[[Any], Any]]] = []
        self._scheduled = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._full_until: dict[str, float] = {}

    def admit(self, order: StreamOrder, shard: int, ticket: bool = False, ttl_ms: int = 0,
              why: TicketReason = "overflow", review: bool = False
              ) -> asyncio.Future[Admitted]:
        """Admit one order (see Admitted); one admitted before answers its status now.

        `ticket` asks for a ticket expiring after ttl_ms, for `why`: "overflow" (the SKU's
        overflow line), "paused" (a parked line) or "review" (the review line); `review`
        marks a paused ticket that goes to review when the pause ends.
        """
        future: asyncio.Future[Admitted] = asyncio.get_running_loop().create_future()
        self._admits.setdefault(shard, []).append(
            Admit(order, future, ticket, ttl_ms, why, review))
        self._schedule()
        return future

    def line_full(self, sku: str) -> bool:
        """The SKU's overflow line answered "full" a moment ago: answer 429 without asking
        Redis again, so an overload is turned away at the cost of a hello-world answer.

        Every FULL_MEMORY_S one order goes through as a probe (the others are still turned
        away meanwhile); a ticket for it means the line has room again and lets all through.
        """
        until = self._full_until.get(sku)
        if until is None:
            return False
        now = time.monotonic()
        if until > now:
            return True
        self._full_until[sku] = now + FULL_MEMORY_S  # this caller is the probe
        return False

    def reserve_key(
        self, storefront: str, key: str, order_id: str, digest: str
    ) -> asyncio.Future[KeyReservation]:
        """Reserve an Idempotency-Key, or learn which order already holds it."""
        shard = keys.shard_of_idempotency(storefront, key, self.shards)
        call: Call = (
            scripts.IDEMPOTENCY,
            [keys.idempotency(shard, storefront, key)],
            [order_id, digest, keys.IDEMPOTENCY_TTL_S],
        )
        return self.script(call, _key_reservation)

    def script(self, call: Call, parse: Callable[[Any], T]) -> asyncio.Future[T]:
        """Run a script call in the next coalesced pipeline (before that tick's admissions);
        the future gets `parse` of its answer."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._reserves.append((call, future, parse))
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
        reserves: list[tuple[Call, asyncio.Future[Any], Callable[[Any], Any]]],
    ) -> None:
        calls: list[Call] = [call for call, _, _ in reserves]
        groups = list(admits.items())
        now = now_ms()
        # a ticket expires ttl_ms after the order was made (what its answer showed), not
        # after this flush: TTL_MS is what is left of it now
        for shard, items in groups:
            order_keys: list[KeyArg] = [keys.order(a.order.order_id, shard) for a in items]
            lines: dict[str, int] = {}
            for a in items:
                lines.setdefault(a.line(shard), len(lines) + 1)
            payloads = [msgpack_encode(a.order) for a in items]
            index = msgpack_encode([
                AdmitItem(a.order.order_id, len(p), a.ticket, line_score(a.order.tier, 0),
                          a.order.sku, a.ttl_ms and a.ttl_ms - (now - a.order.created_ms),
                          bool(a.order.notify_url), lines[a.line(shard)],
                          a.why, f"{a.order.storefront}:{a.order.sku}", a.review,
                          a.order.settles_points)
                for a, p in zip(items, payloads, strict=True)
            ])
            order_keys += list(lines)
            calls.append((
                scripts.ADMIT,
                [keys.stream(shard), keys.sequence(shard), keys.expiries(shard),
                 keys.overflowing(shard), keys.outbox(shard), keys.parking(shard),
                 *order_keys],
                [now, index, b"".join(payloads), self.capacity],
            ))
        counts = self.counts
        counts.pipelines += 1
        counts.admit_calls += len(groups)
        counts.admitted += sum(len(items) for _, items in groups)
        try:
            results = await scripts.run_pipelined(self.redis, calls)
        except Exception as exc:
            _fail_all(reserves, admits, exc)
            return
        for (_, future, parse), result in zip(reserves, results, strict=False):
            if isinstance(result, Exception):
                _set_exception(future, result)
            else:
                _set_result(future, parse(result))
        for (_, items), result in zip(groups, results[len(reserves):], strict=True):
            if isinstance(result, Exception):
                for a in items:
                    _set_exception(a.future, result)
                continue
            for a, (status, position) in zip(items, result, strict=True):
                if a.why == "overflow":
                    if status == b"full":
                        self._full_until[a.order.sku] = time.monotonic() + FULL_MEMORY_S
                    else:
                        self._full_until.pop(a.order.sku, None)
                _set_result(a.future, Admitted(status.decode(), int(position)))

    async def close(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)


def _set_result(future: asyncio.Future[Any], value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _key_reservation(result: Any) -> KeyReservation:
    oid, digest, created = result
    return KeyReservation(oid.decode(), digest.decode(), created == 1)


def _fail_all(
    reserves: Sequence[tuple[Call, asyncio.Future[Any], Callable[[Any], Any]]],
    admits: dict[int, list[Admit]],
    exc: BaseException,
) -> None:
    for _, future, _ in reserves:
        _set_exception(future, exc)
    for items in admits.values():
        for a in items:
            _set_exception(a.future, exc)
