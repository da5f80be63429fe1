"""The surge (爆单) watch over the whole fleet's incoming orders, and over each SKU's.

Every door counts its arrivals (in all and by SKU); once per fleet round it adds them to the
fleet's counters in Redis and feeds the fleet's totals to its detectors: one for all orders,
one per SKU that has been ordered (a hot SKU raises its own alert even while the total looks
calm). Every door detects; the one that swaps the fleet's surge state in Redis raises the
alert, so each start and end fires once: a log line, a metric, an audit entry and a POST to
`[surge] webhook_url`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from redis.asyncio import Redis

from engine.config.settings import Settings, Surge
from engine.door.surge import SurgeDetector, SurgeEvent, SurgeRules
from engine.metrics import Metrics
from engine.store import audit, watch_keys

log = logging.getLogger("kamigate.alerts")
MAX_SKUS_WATCHED = 10_000  # bounded: SKU ids come from the config, but configs change


def surge_rules(config: Surge) -> SurgeRules:
    return SurgeRules(factor=config.factor, capacity_factor=config.capacity_factor,
                      clear_factor=config.clear_factor, min_rate=config.min_rate,
                      baseline_s=config.baseline_s, hold_s=config.hold_s)


class SurgeWatch:
    """The door's surge detectors: `arrive` on every order, `round` once per fleet round."""

    def __init__(self, config: Surge, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.detector = SurgeDetector(surge_rules(config), clock)
        self.arrived = 0  # this door, since the last round
        self.arrived_by_sku: Counter[str] = Counter()
        self.fleet_total = -1
        self.sku_totals: dict[str, int] = {}
        self.sku_detectors: dict[str, SurgeDetector] = {}
        self.hot: frozenset[str] = frozenset()  # SKUs surging now
        self._tasks: set[asyncio.Task[None]] = set()

    def arrive(self, sku: str) -> None:
        self.arrived += 1
        self.arrived_by_sku[sku] += 1

    def surging(self, sku: str) -> bool:
        """A surge of all orders, or of this SKU's, is on."""
        return self.detector.active or sku in self.hot

    async def round(self, redis: Redis, settings: Settings, metrics: Metrics,
                    drained_per_s: float) -> None:
        arrived, self.arrived = self.arrived, 0
        by_sku, self.arrived_by_sku = self.arrived_by_sku, Counter()
        pipe = redis.pipeline(transaction=False)
        pipe.incrby(watch_keys.incoming(), arrived)
        for sku, n in by_sku.items():
            pipe.hincrby(watch_keys.incoming_by_sku(), sku, n)
        pipe.hgetall(watch_keys.incoming_by_sku())
        replies = await pipe.execute()
        total, totals = int(replies[0]), replies[-1]
        if self.fleet_total < 0:
            # the first counts seen start the watch: the detector is born now, so it learns
            # its baseline over its first hold_s rather than take the gap since start-up
            self.fleet_total = total
            self.sku_totals = {k.decode(): int(v) for k, v in totals.items()}
            self.detector = SurgeDetector(surge_rules(settings.surge), self._clock)
            return
        delta, self.fleet_total = max(0, total - self.fleet_total), total
        if not settings.surge.enabled:
            return
        rules = surge_rules(settings.surge)
        self.detector.update_rules(rules)
        capacity = drained_per_s if settings.surge.capacity_factor > 0 else None
        event = self.detector.observe(delta, capacity)
        metrics.incoming_rate.set(round(self.detector.rate, 1))
        metrics.surge_baseline.set(round(self.detector.baseline, 1))
        metrics.surge_active.set(1 if self.detector.active else 0)
        if event is not None:
            await self._swap(redis, watch_keys.surge(), settings.surge, metrics, event, None)
        if settings.surge.per_sku:
            await self._per_sku(redis, settings, rules, metrics, totals)

    async def _per_sku(self, redis: Redis, settings: Settings, rules: SurgeRules,
                       metrics: Metrics, totals: dict[bytes, bytes]) -> None:
        configured = {s.id for s in settings.skus}
        hot = set()
        for raw, value in totals.items():
            sku, count = raw.decode(), int(value)
            before = self.sku_totals.get(sku)
            self.sku_totals[sku] = count
            if sku not in configured or before is None:
                continue  # first seen: its count so far is history, not a rate
            detector = self.sku_detectors.get(sku)
            if detector is None:
                if len(self.sku_detectors) >= MAX_SKUS_WATCHED:
                    continue
                detector = self.sku_detectors[sku] = SurgeDetector(rules, self._clock)
            detector.update_rules(rules)
            event = detector.observe(max(0, count - before))
            if event is not None:
                await self._swap(redis, watch_keys.surge_of_sku(sku), settings.surge, metrics,
                                 event, sku)
            metrics.sku_surge_active.labels(sku).set(1 if detector.active else 0)
            if detector.active:
                hot.add(sku)
        self.hot = frozenset(hot)

    async def _swap(self, redis: Redis, key: str, config: Surge, metrics: Metrics,
                    event: SurgeEvent, sku: str | None) -> None:
        """Swap the fleet's state; the door that changed it raises the alert."""
        previous: Any = await redis.set(key, event.kind, get=True)
        if (previous or b"end").decode() != event.kind:
            await self._alert(redis, config, metrics, event, sku)

    async def _alert(self, redis: Redis, config: Surge, metrics: Metrics,
                     event: SurgeEvent, sku: str | None) -> None:
        metrics.surge_events.labels(event.kind).inc()
        body: dict[str, Any] = {"event": f"surge.{event.kind}", "rate": round(event.rate, 1),
                                "baseline": round(event.baseline, 1), "reason": event.reason,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if sku is not None:
            body["sku"] = sku
        log.warning("surge %s%s: %s", event.kind, f" of {sku}" if sku else "", event.reason)
        await audit.record(redis, "kamigate", f"surge.{event.kind}", body)
        if config.webhook_url:
            task = asyncio.create_task(_post(config.webhook_url, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)


async def _post(url: str, body: dict[str, Any]) -> None:
    """Tell the operators' receiver; a failure is logged, never retried (the log, metric
    and audit entry remain)."""
    try:
        headers = {"Content-Type": "application/json", "Kamigate-Event": body["event"]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                session.post(url, data=json.dumps(body), headers=headers) as resp:
            if resp.status >= 300:
                log.warning("surge alert to %s answered %s", _host(url), resp.status)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("surge alert to %s failed (%s)", _host(url), type(exc).__name__)


def _host(url: str) -> str:
    """Where an alert went, for the log: the host only (the URL may carry a token)."""
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
