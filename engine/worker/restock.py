"""Suppliers that restock by themselves: the worker that owns a SKU asks its supplier for
`batch` codes when the SKU's available falls below `low_water` or its sold-out line is not
empty, imports the answer as lot `batch_id`, and the import runs the line.

A request is a POST of `{"sku", "qty", "request_id"}` signed like a webhook
(Kamigate-Signature over the body with the supplier's secret). The request_id is kept in
Redis before it is sent and sent again, unchanged, until an answer is imported: a supplier
that did the work but whose answer was lost can answer with the same batch, and a batch id is
imported once (its codes are skipped as seen). Failures back off exponentially with jitter,
up to `max_backoff_s`; every request runs as a task of its own with a time-out, so a slow or
failing supplier never holds up the shard's batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Coroutine
from typing import Any

import aiohttp
from redis.asyncio import Redis

from engine.clock import parse_rfc3339
from engine.config.settings import Settings, Supplier
from engine.stock.importer import Importer, LotVoided
from engine.stock.supplies import SupplyState, load, save
from engine.store import audit, keys
from engine.store.sealing import sealer_of
from engine.wire import LOT_PATTERN
from engine.worker.webhook_sender import retry_delay, signature

log = logging.getLogger("kamigate.restock")
ROUND_EVERY_S = 1.0
FIRST_RETRY_S = 1.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_CODES = 100_000
_LOT = re.compile(LOT_PATTERN)


class BadAnswer(Exception):
    """The supplier answered, but not with a batch we can import (the message says why)."""


def read_batch(payload: Any) -> tuple[str, list[str], int]:
    """(batch_id, codes, expiry in unix seconds or 0) of a supplier's answer."""
    if not isinstance(payload, dict):
        raise BadAnswer("the answer is not a JSON object")
    batch_id, codes, expires = payload.get("batch_id"), payload.get("codes"), \
        payload.get("expires_at")
    if not isinstance(batch_id, str) or not _LOT.match(batch_id):
        raise BadAnswer("batch_id: 1-64 characters: letters, digits and . _ : @ -")
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise BadAnswer("codes: must be a list of strings")
    if len(codes) > MAX_CODES:
        raise BadAnswer(f"codes: at most {MAX_CODES} in one batch")
    if expires is None:
        return batch_id, codes, 0
    if not isinstance(expires, str):
        raise BadAnswer("expires_at: an RFC 3339 timestamp or null")
    try:
        return batch_id, codes, parse_rfc3339(expires) // 1000
    except ValueError:
        raise BadAnswer("expires_at: an RFC 3339 timestamp with a time zone") from None


class Restocker:
    """One per worker: `round` looks at the owned SKUs of every supplier and starts requests."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.redis = redis
        self.states: dict[int, dict[str, SupplyState]] = {}  # by shard: read once, then kept
        self.running: dict[str, asyncio.Task[None]] = {}  # by "<supplier>|<sku>"
        self._looked_at = 0.0
        self._rng = random.Random()
        self.use(settings)

    def use(self, settings: Settings) -> None:
        self.settings = settings
        codes = settings.codes
        self.sealer = sealer_of(codes.keys, codes.current, codes.fingerprint_key)

    async def round(self, shards: list[int], now_ms: int, force: bool = False) -> int:
        """Start a request for every owned SKU that needs stock and may be asked now; the
        number started. At most once a second unless `force` (a driven clock)."""
        clock = time.monotonic()
        if not self.settings.suppliers or (
                not force and clock - self._looked_at < ROUND_EVERY_S):
            return 0
        self._looked_at = clock
        started = 0
        for supplier in self.settings.suppliers:
            for sku in supplier.skus:
                shard = keys.shard_of_sku(sku, self.settings.redis.shards)
                if shard not in shards or f"{supplier.id}|{sku}" in self.running:
                    continue
                state = await self._state(shard, supplier.id, sku)
                if now_ms < state.next_at_ms or not await self._needs(sku, shard, supplier):
                    continue
                self._start(state.field, self._ask(supplier, shard, state, now_ms))
                started += 1
        return started

    def _start(self, field: str, request: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(request)
        self.running[field] = task

        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(field, None)

        task.add_done_callback(done)

    async def settle(self) -> None:
        """Wait for the requests in flight (tests and tools step the worker)."""
        await asyncio.gather(*self.running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        await self.settle()

    def forget(self, shard: int) -> None:
        """The shard changed hands: its states are read again when it comes back."""
        self.states.pop(shard, None)

    async def _state(self, shard: int, supplier: str, sku: str) -> SupplyState:
        known = self.states.get(shard)
        if known is None:
            known = self.states[shard] = await load(self.redis, shard)
        field = f"{supplier}|{sku}"
        if field not in known:
            known[field] = SupplyState(supplier=supplier, sku=sku)
        return known[field]

    async def _needs(self, sku: str, shard: int, supplier: Supplier) -> bool:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(keys.sku_counts(sku, shard), "available")
        pipe.zcard(keys.line(sku, shard))
        available, waiting = await pipe.execute()
        return int(available or 0) < supplier.low_water or int(waiting) > 0

    async def _ask(self, supplier: Supplier, shard: int, state: SupplyState,
                   now_ms: int) -> None:
        if not state.request_id:
            state.request_id = f"rq_{secrets.token_hex(12)}"
        state.last_attempt_ms = now_ms
        await save(self.redis, shard, state)  # the id outlives this worker
        try:
            batch_id, codes, expires = await self._post(supplier, state)
            added, duplicates = await self._import(supplier, state.sku, batch_id, codes,
                                                   expires)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a supplier's failure, whatever it is, is its own
            self._failed(supplier, state, now_ms, _describe(exc))
        else:
            state.request_id, state.last_batch = "", batch_id
            state.batches += 1
            state.codes_received += added
            state.duplicates += duplicates
            if added == 0:
                # nothing new (an empty or repeated batch): asking again at once would loop
                self._failed(supplier, state, now_ms, f"batch {batch_id} held no new codes")
            else:
                state.failures, state.last_error = 0, ""
                state.last_success_ms, state.next_at_ms = now_ms, now_ms
        with contextlib.suppress(Exception):
            await save(self.redis, shard, state)

    def _failed(self, supplier: Supplier, state: SupplyState, now_ms: int, why: str) -> None:
        state.failures += 1
        state.failed += 1
        state.last_error = why
        wait_s = retry_delay(state.failures, FIRST_RETRY_S, supplier.max_backoff_s, self._rng)
        state.next_at_ms = now_ms + int(wait_s * 1000)
        log.warning("supplier %s, SKU %s: %s; asked again in %.1f s", supplier.id, state.sku,
                    why, wait_s)

    async def _post(self, supplier: Supplier, state: SupplyState) -> tuple[str, list[str], int]:
        body = json.dumps({"sku": state.sku, "qty": supplier.batch,
                           "request_id": state.request_id}).encode()
        headers = {"Content-Type": "application/json", "Kamigate-Event": "restock.request",
                   "Kamigate-Signature": signature(supplier.secret, body, int(time.time()))}
        timeout = aiohttp.ClientTimeout(total=supplier.timeout_s)
        # a session per request: a restock is rare (at most one a second per SKU)
        async with aiohttp.ClientSession(timeout=timeout) as session, \
                session.post(supplier.url, data=body, headers=headers,
                             allow_redirects=False) as resp:
            if resp.status != 200:
                raise BadAnswer(f"HTTP {resp.status}")
            raw = await resp.content.read(MAX_ANSWER_BYTES + 1)
        if len(raw) > MAX_ANSWER_BYTES:
            raise BadAnswer(f"the answer is over {MAX_ANSWER_BYTES} bytes")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise BadAnswer("the answer is not JSON") from None
        return read_batch(payload)

    async def _import(self, supplier: Supplier, sku: str, batch_id: str, codes: list[str],
                      expires: int) -> tuple[int, int]:
        intake = Importer(self.redis, self.settings.redis.shards, sku, batch_id, expires,
                          sealer=self.sealer)
        try:
            await intake.feed(codes)
            result = await intake.finish()
        except LotVoided:
            raise BadAnswer(f"batch {batch_id}: a lot of that id was voided") from None
        await audit.record(self.redis, f"supplier:{supplier.id}", "stock.restock", {
            "sku": sku, "lot": batch_id, "added": result.added,
            "duplicates": result.duplicates, "invalid": result.invalid})
        return result.added, result.duplicates


def _describe(exc: BaseException) -> str:
    """A failure, for the state and the log (never a code: answers are not quoted)."""
    if isinstance(exc, BadAnswer):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__
