"""The front door's guards beside the buckets: the circuit breaker around Redis, and the
surge (爆单) watch over the whole fleet's incoming orders."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from engine.config.settings import Breaker, Settings, Surge
from engine.door.circuit import BreakerRules, CircuitBreaker
from engine.door.surge import SurgeDetector, SurgeEvent, SurgeRules
from engine.metrics import Metrics
from engine.store import audit, keys

log = logging.getLogger("kamigate.alerts")
BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}


def breaker_rules(config: Breaker) -> BreakerRules:
    return BreakerRules(failures=config.failures, slow_ms=config.slow_ms,
                        open_s=config.open_s, probes=config.probes)


def surge_rules(config: Surge) -> SurgeRules:
    return SurgeRules(factor=config.factor, capacity_factor=config.capacity_factor,
                      clear_factor=config.clear_factor, min_rate=config.min_rate,
                      baseline_s=config.baseline_s, hold_s=config.hold_s)


class SurgeWatch:
    """Counts this door's arrivals; once per fleet round adds them to the fleet's counter
    and feeds the fleet's total to a detector. Every door detects; the one that swaps the
    fleet's surge state in Redis raises the alert, so it fires once."""

    def __init__(self, config: Surge) -> None:
        self.detector = SurgeDetector(surge_rules(config))
        self.arrived = 0  # this door, since the last round
        self.fleet_total = -1
        self._tasks: set[asyncio.Task[None]] = set()

    async def round(self, redis: Redis, settings: Settings, metrics: Metrics,
                    drained_per_s: float) -> None:
        arrived, self.arrived = self.arrived, 0
        total = int(await redis.incrby(keys.incoming(), arrived))
        if self.fleet_total < 0:
            self.fleet_total = total
            return
        delta, self.fleet_total = max(0, total - self.fleet_total), total
        if not settings.surge.enabled:
            return
        self.detector.update_rules(surge_rules(settings.surge))
        capacity = drained_per_s if settings.surge.capacity_factor > 0 else None
        event = self.detector.observe(delta, capacity)
        metrics.incoming_rate.set(round(self.detector.rate, 1))
        metrics.surge_baseline.set(round(self.detector.baseline, 1))
        metrics.surge_active.set(1 if self.detector.active else 0)
        if event is not None:
            previous: Any = await redis.set(keys.surge(), event.kind, get=True)
            if (previous or b"end").decode() != event.kind:
                await self._alert(redis, settings.surge, metrics, event)

    async def _alert(self, redis: Redis, config: Surge, metrics: Metrics,
                     event: SurgeEvent) -> None:
        metrics.surge_events.labels(event.kind).inc()
        body = {"event": f"surge.{event.kind}", "rate": round(event.rate, 1),
                "baseline": round(event.baseline, 1), "reason": event.reason,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        log.warning("surge %s: %s", event.kind, event.reason)
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


BREAKER = web.AppKey("breaker", CircuitBreaker)
SURGE = web.AppKey("surge", SurgeWatch)
