"""How fast each waiting line moves, measured where it moves (the worker) and read where
tickets are answered (the front door) to give an ETA: position / drain rate."""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from redis.asyncio import Redis

from engine.store import keys

WINDOW_S = 3.0
MIN_SPAN_S = 0.2
DELAY_WEIGHT = 0.05
DELAY_FIELD = "delay_ms"
DELAY_FRESH_MS = 3000
PUBLISH_EVERY_S = 0.5
IDLE_RATE = 0.01  # below this a line is not moving: no ETA


def line_name(reason: str, sku: str) -> str:
    """`overflow:<sku>` (admitted at the rate) or `line:<sku>` (served on restock)."""
    return f"{'overflow' if reason == 'overflow' else 'line'}:{sku}"


class DrainMeter:
    """Orders leaving each line per second over the last WINDOW_S seconds.

    Counted since the line started moving when that is more recent, so a steady drain is
    measured right after it begins, and a line that stopped reads 0 once the window passes.
    """

    def __init__(self, now: float) -> None:
        self.rates: dict[str, float] = {}
        self.delay_ms = 0.0  # admission to claim, smoothed
        self._events: dict[str, deque[tuple[float, int]]] = {}
        self._published = now

    def delay(self, ms: float) -> None:
        """One claimed order waited `ms` since its admission."""
        self.delay_ms += DELAY_WEIGHT * (ms - self.delay_ms)

    def record(self, line: str, n: int = 1, now: float | None = None) -> None:
        if n > 0:
            at = time.monotonic() if now is None else now
            self._events.setdefault(line, deque()).append((at, n))

    def tick(self, now: float) -> None:
        for line, events in list(self._events.items()):
            while events and events[0][0] < now - WINDOW_S:
                events.popleft()
            if not events:
                del self._events[line]
                self.rates[line] = 0.0
                continue
            # The first event opens the span: what left before it is not part of this window.
            span = max(now - events[0][0], MIN_SPAN_S)
            self.rates[line] = (sum(n for _, n in events) - events[0][1]) / span \
                if len(events) > 1 else 0.0

    def due(self, now: float) -> bool:
        if now - self._published >= PUBLISH_EVERY_S:
            self._published = now
            return True
        return False

    async def publish(self, redis: Redis, shard: int, now_ms: int) -> None:
        fields: dict[Any, Any] = {k: f"{v:.4f}" for k, v in self.rates.items()}
        fields[DELAY_FIELD] = f"{self.delay_ms:.1f}:{now_ms}"
        await redis.hset(keys.drain(shard), mapping=fields)
        await redis.pexpire(keys.drain(shard), 60_000)


class DrainRates:
    """The front door's copy of every shard's drain rates, refreshed in the background."""

    def __init__(self) -> None:
        self.rates: dict[str, float] = {}
        self.delay_ms = 0.0  # the slowest shard's admission-to-claim delay

    async def refresh(self, redis: Redis, shards: int) -> None:
        pipe = redis.pipeline(transaction=False)
        for shard in range(shards):
            pipe.hgetall(keys.drain(shard))
        merged: dict[str, float] = {}
        delays = [0.0]
        now = time.time() * 1000
        for found in await pipe.execute():
            for k, v in found.items():
                if k.decode() == DELAY_FIELD:
                    value, _, at = v.decode().partition(":")
                    if now - float(at or 0) < DELAY_FRESH_MS:
                        delays.append(float(value))
                else:
                    merged[k.decode()] = float(v)
        self.rates = merged
        self.delay_ms = max(delays)

    def eta_s(self, reason: str, sku: str, position: int | None) -> float | None:
        return eta_s(self.rates, reason, sku, position)


def eta_s(rates: dict[str, float], reason: str, sku: str, position: int | None
          ) -> float | None:
    """Seconds until the ticket at `position` is served; None when the line is still."""
    if not position:
        return None
    rate = rates.get(line_name(reason, sku), 0.0)
    if rate < IDLE_RATE:
        return None
    return round(position / rate, 1)
