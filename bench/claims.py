"""Claim throughput per shard: the worker alone, on one Redis or on a three-master cluster.

Orders are admitted first through the front door's own admission (engine/door/ingest.py,
no HTTP), N for each of K SKUs that live on K different shards; then one worker (the real
engine/worker/consumer.Worker, in this process) drains every stream and the time it takes
gives claims per second: with K = 1 one shard's figure, with K = 4 four shards served by the
same worker. Every order gets one code; C1 is checked at the end (reconcile).

Usage:  python -m bench.claims [--orders 20000] [--cluster] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine import config
from engine.door.ingest import Ingest
from engine.stock.importer import Importer
from engine.stock.reconcile import reconcile
from engine.store import connection, keys
from engine.store.embedded import RedisProcess
from engine.wire import StreamOrder
from engine.worker.consumer import Worker
from tests.cluster import Cluster

SHARDS = 4


def _skus(count: int) -> list[str]:
    """`count` SKU ids on `count` different shards."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < count:
        sku = f"claim-{n}"
        found.setdefault(keys.shard_of_sku(sku, SHARDS), sku)
        n += 1
    return list(found.values())


async def _one(url: str, cluster: bool, skus: list[str], per_sku: int) -> dict[str, Any]:
    settings = config.from_mapping({
        "redis": {"url": "redis://unused", "shards": SHARDS, "cluster": cluster},
        "skus": [{"id": s, "max_qty": 10} for s in skus]}, environ={})
    redis = await connection.connect(url, cluster=cluster)
    blocking = connection.client(url, timeout=30, cluster=cluster)
    try:
        await redis.flushall(**({"target_nodes": "primaries"} if cluster else {}))
        for sku in skus:
            intake = Importer(redis, SHARDS, sku, "bench", 0)
            await intake.feed(f"{sku}-{i:09d}" for i in range(per_sku))
            await intake.finish()
        ingest = Ingest(redis, SHARDS)
        now = int(time.time() * 1000)
        for start in range(0, per_sku, 2000):
            waiting = []
            for sku in skus:
                shard = keys.shard_of_sku(sku, SHARDS)
                for i in range(start, min(start + 2000, per_sku)):
                    waiting.append(ingest.admit(StreamOrder(
                        keys.new_order_id(shard), "bench", sku, 1, f"b{i}", 0, now), shard))
            await asyncio.gather(*waiting)
        worker = Worker(settings, redis, blocking)
        started = time.perf_counter()
        await worker.drain(max_batches=1_000_000)
        took = time.perf_counter() - started
        report = await reconcile(redis, SHARDS, skus)
        issued = sum([int(await redis.hget(keys.sku_counts(s, keys.shard_of_sku(s, SHARDS)),
                                          "issued") or 0) for s in skus])
        assert report.ok and issued == per_sku * len(skus), (report.violations, issued)
        return {"shards": len(skus), "orders": issued, "seconds": round(took, 2),
                "claims_per_s": round(issued / took)}
    finally:
        await redis.aclose()
        await blocking.aclose()


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="kg-claims-") as tmp:
        if args.cluster:
            nodes = Cluster(Path(tmp) / "cluster")
            nodes.start()
            url, stop = nodes.url, nodes.stop
        else:
            server = RedisProcess(Path(tmp) / "redis")
            server.start()
            url, stop = server.url, server.stop
        try:
            rows: dict[int, list[dict[str, Any]]] = {1: [], SHARDS: []}
            for _ in range(args.runs):
                for count in rows:
                    rows[count].append(await _one(url, args.cluster, _skus(count),
                                                  args.orders // count))
                    print(json.dumps(rows[count][-1]), flush=True)
        finally:
            stop()
    return {"store": "cluster" if args.cluster else "one redis",
            **{f"claims_per_s_{count}_shard{'s' if count > 1 else ''}":
               statistics.median(r["claims_per_s"] for r in found)
               for count, found in rows.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20_000, help="in all, per measurement")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cluster", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
