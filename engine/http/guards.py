"""The front door's guards beside the buckets: the circuit breaker around Redis, and the
surge (爆单) watch (engine/http/surge_watch.py)."""

from __future__ import annotations

from aiohttp import web

from engine.config.settings import Breaker
from engine.door.circuit import BreakerRules, CircuitBreaker
from engine.http.surge_watch import SurgeWatch

BREAKER_STATE = {"closed": 0, "half_open": 1, "open": 2}


def breaker_rules(config: Breaker) -> BreakerRules:
    return BreakerRules(failures=config.failures, slow_ms=config.slow_ms,
                        open_s=config.open_s, probes=config.probes)


BREAKER = web.AppKey("breaker", CircuitBreaker)
SURGE = web.AppKey("surge", SurgeWatch)
