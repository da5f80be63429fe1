"""Prometheus metrics: this process's own, plus fleet-wide figures read from Redis per scrape."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

CLAIM_SIZE_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def size_bucket(n: int) -> str:
    """The claim-size histogram bucket of a claim of n orders."""
    for bound in CLAIM_SIZE_BUCKETS:
        if n <= bound:
            return str(bound)
    return "inf"


class FleetCollector(Collector):
    """Counters the workers keep in Redis (kg:stats), as read just before a scrape."""

    def __init__(self) -> None:
        self.stats: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "kamigate_orders_decided", "Orders decided by the workers, by outcome",
            labels=["status"],
        )
        for status in ("fulfilled", "held", "queued", "rejected"):
            outcomes.add_metric([status], self.stats.get(status, 0))
        yield outcomes
        yield CounterMetricFamily(
            "kamigate_dead_letter", "Order-stream entries moved to the dead-letter stream",
            value=self.stats.get("dead_letter", 0))
        buckets = []
        running = 0
        for bound in CLAIM_SIZE_BUCKETS:
            running += self.stats.get(f"claim_size_le_{bound}", 0)
            buckets.append((str(float(bound)), running))
        running += self.stats.get("claim_size_le_inf", 0)
        buckets.append(("+Inf", running))
        yield HistogramMetricFamily(
            "kamigate_claim_batch_size", "Orders per claim call",
            buckets=buckets, sum_value=self.stats.get("claim_orders", 0),
        )


class RouteLatency:
    """Request latency per route, counted without locks: the front door is one thread, and
    prometheus_client's Histogram takes a lock per observation on the hot path."""

    def __init__(self) -> None:
        self.counts: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def observe(self, route: str, seconds: float) -> None:
        counts = self.counts.get(route)
        if counts is None:
            counts = self.counts[route] = [0] * (len(LATENCY_BUCKETS) + 1)
            self.sums[route] = 0.0
        counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sums[route] += seconds


class WriterCounts:
    """What the door's coalescing writer sent: how well admissions share round trips."""

    __slots__ = ("admit_calls", "admitted", "pipelines")

    def __init__(self) -> None:
        self.pipelines = 0  # round trips to Redis
        self.admit_calls = 0  # admit.lua calls (one per shard per round trip)
        self.admitted = 0  # orders in those calls


class DoorCollector(Collector):
    """This front door's own counters, kept as plain numbers and read at scrape time."""

    def __init__(self) -> None:
        self.latency = RouteLatency()
        self.writer = WriterCounts()
        self.admitted = 0
        self.rejected: dict[str, int] = {}  # requests answered with a problem, by code

    def reject(self, code: str) -> None:
        self.rejected[code] = self.rejected.get(code, 0) + 1

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily("kamigate_orders_admitted", "Orders admitted to a stream",
                                  value=self.admitted)
        writer = self.writer
        yield CounterMetricFamily("kamigate_door_pipelines", "Redis round trips of the "
                                  "door's coalescing writer", value=writer.pipelines)
        yield CounterMetricFamily("kamigate_door_admit_calls", "admit.lua calls (one per "
                                  "shard per round trip)", value=writer.admit_calls)
        yield CounterMetricFamily("kamigate_door_admit_call_orders", "Orders sent in those "
                                  "calls (over admit_calls: the coalescing's batch size)",
                                  value=writer.admitted)
        rejected = CounterMetricFamily("kamigate_requests_rejected",
                                       "Requests answered with a problem", labels=["code"])
        for code, n in sorted(self.rejected.items()):
            rejected.add_metric([code], n)
        yield rejected
        family = HistogramMetricFamily("kamigate_request_seconds", "Request latency by route",
                                       labels=["route"])
        for route, counts in sorted(self.latency.counts.items()):
            running, buckets = 0, []
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
                running += n
                buckets.append(("+Inf" if bound == math.inf else str(bound), running))
            family.add_metric([route], buckets, self.latency.sums[route])
        yield family


class Metrics:
    """One registry per front-door app, so tests can build many apps in one process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stock = Gauge("kamigate_stock_codes", "Codes per SKU by state", ["sku", "state"],
                           registry=r)
        self.stock_low = Gauge("kamigate_stock_low",
                               "1 while a SKU's available stock is under its low_stock",
                               ["sku"], registry=r)
        self.queue_length = Gauge("kamigate_queue_length", "Orders waiting in a SKU's line",
                                  ["sku"], registry=r)
        self.archived = Gauge("kamigate_archived_orders",
                              "Decided orders past the retention, archived and not yet "
                              "written out by `kamigate export` (it grows until exported)",
                              registry=r)
        self.stream_lag = Gauge("kamigate_stream_lag",
                                "Entries in the order stream per shard (unclaimed, plus up to "
                                "0.5 s of claimed ones not yet trimmed)",
                                ["shard"], registry=r)
        self.throttled = Gauge("kamigate_backpressure", "1 while admission follows the workers",
                               registry=r)
        self.admission_rate = Gauge("kamigate_admission_rate",
                                    "Fleet admission rate in force (-1: unlimited)", registry=r)
        self.backlog = Gauge("kamigate_stream_backlog",
                             "Order-stream entries not yet trimmed, all shards", registry=r)
        self.config_version = Gauge("kamigate_config_info",
                                    "The running config: its version, by sha256",
                                    ["sha256"], registry=r)
        self.surge_active = Gauge("kamigate_surge_active",
                                  "1 while incoming orders surge (爆单)", registry=r)
        self.incoming_rate = Gauge("kamigate_incoming_rate",
                                   "Orders arriving at the fleet per second", registry=r)
        self.surge_baseline = Gauge("kamigate_incoming_baseline",
                                    "The recent baseline of the incoming rate", registry=r)
        self.surge_events = Counter("kamigate_surge_events", "Surge alerts by kind",
                                    ["kind"], registry=r)
        self.supplier_codes = Gauge("kamigate_supplier_codes_received",
                                    "Codes a supplier's batches added to the SKU's stock",
                                    ["supplier", "sku"], registry=r)
        self.supplier_failures = Gauge("kamigate_supplier_failures",
                                       "A supplier's failed requests for the SKU, all told",
                                       ["supplier", "sku"], registry=r)
        self.supplier_failing = Gauge("kamigate_supplier_failures_in_a_row",
                                      "A supplier's failures in a row for the SKU (0: fine)",
                                      ["supplier", "sku"], registry=r)
        self.supplier_last_success = Gauge("kamigate_supplier_last_success_timestamp_seconds",
                                           "When a supplier's batch for the SKU was last "
                                           "imported (0: never)", ["supplier", "sku"],
                                           registry=r)
        self.sku_surge_active = Gauge("kamigate_sku_surge_active",
                                      "1 while orders for the SKU surge (爆单)", ["sku"],
                                      registry=r)
        self.breaker_open = Gauge("kamigate_breaker_state",
                                  "The Redis circuit breaker: 0 closed, 1 half open, 2 open",
                                  registry=r)
        self.breaker_opened = Counter("kamigate_breaker_opened",
                                      "Times the Redis circuit breaker opened", registry=r)
        self.fleet = FleetCollector()
        r.register(self.fleet)
        self.door = DoorCollector()
        r.register(self.door)
