"""Redis memory per decided order and per waiting ticket, with sealed codes.

One kamigate (front door, worker, redis-server) as bench.e2e starts it, with `[codes]` keys
(every code sealed at rest). N codes are imported; then N orders of one code each, every one
from its own buyer, are placed over HTTP and fulfilled; the growth of Redis' `used_memory`
between the two quiet points, divided by N, is what a decided order costs before the
retention removes it (its record with the sealed code, its stream entries until trimmed, its
index and issuance-audit entries; minus its code's place in the lot, which it took over).
Then M orders for a SKU without stock wait as tickets: the growth divided by M is a ticket's
cost. MEMORY USAGE of one record of each kind shows the record's share.

With --soak MINUTES it then measures retention instead: orders keep coming for that long
(--rate a second, every code they need imported first) while the retention step and the export
run every 10 s, the retention with its clock a day ahead so that an order decided more than
--keep seconds ago is due (`[orders] retention_s` is at least a day: the real step, the clock
driven), and the export writing to /dev/null; used_memory is sampled every 10 s, with the
issuance audit's share (kept `[audit] retention_s`, at least 7 days: it grows by design
during a soak), and what is left should stay flat once the first orders are retired.

Usage:  python -m bench.memory [--orders 20000] [--tickets 5000] [--concurrency 64]
        python -m bench.memory --soak 10 [--rate 200] [--keep 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.e2e import STOREFRONT_KEY, stack
from bench.e2e import _import as e2e_import
from engine import config
from engine.cli.export import export_once
from engine.config.directory import Directory
from engine.store import keys
from engine.worker import retention

SEALED = """
[codes]
keys = {{ k1 = "{key}" }}
current = "k1"
fingerprint_key = "{fingerprint}"
[[skus]]
id = "empty-sku"
max_qty = 10
queue_ttl_s = 86400
"""


async def _post_all(port: int, sku: str, n: int, concurrency: int, prefix: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/v1/orders"
    headers = {"Authorization": f"Bearer {STOREFRONT_KEY}"}
    ids: list[str] = []
    queue = iter(range(n))

    async def one(session: aiohttp.ClientSession) -> None:
        for i in queue:
            body = {"sku": sku, "qty": 1, "buyer": f"{prefix}{i}", "wait_ms": 5000}
            async with session.post(url, json=body, headers=headers) as resp:
                found = await resp.json()
                assert resp.status in (201, 202), found
                ids.append(found["order_id"])

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return ids


async def _import(port: int, n: int) -> None:
    """Codes shaped like real ones (a serial and a random part), so sealing costs as much."""
    await e2e_import(port, n, "\n".join(f"CARD-{i:012d}-{os.urandom(6).hex()}"
                                        for i in range(n)), "mem")


async def _quiet_memory(redis: Redis) -> int:
    """used_memory once the worker has trimmed what it trims (two trims apart)."""
    await asyncio.sleep(3.0)
    found: Any = await redis.info("memory")
    return int(found["used_memory"])


async def _settled(redis: Redis, ids: list[str], status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    for order_id in ids:
        while (await redis.hget(keys.order(order_id, keys.shard_of_order(order_id) or 0),
                                "st")) != status.encode():
            if time.monotonic() > deadline:
                raise RuntimeError(f"order {order_id} never became {status}")
            await asyncio.sleep(0.05)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    extra = SEALED.format(key=key, fingerprint=os.urandom(16).hex())
    with stack(extra) as running:
        port = running.kg_port
        redis = Redis.from_url(running.redis.url)
        try:
            if args.ziplist_value:  # what a Redis of its own default costs: 64
                await redis.config_set("hash-max-ziplist-value", args.ziplist_value)
            await _import(port, args.orders)
            before = await _quiet_memory(redis)
            started = time.monotonic()
            ids = await _post_all(port, "bench-sku", args.orders, args.concurrency, "m")
            await _settled(redis, ids, "fulfilled")
            took = time.monotonic() - started
            after = await _quiet_memory(redis)
            record = await redis.memory_usage(keys.order(ids[0], keys.shard_of_order(ids[0])
                                                         or 0))
            tickets = await _post_all(port, "empty-sku", args.tickets, args.concurrency, "t")
            await _settled(redis, tickets, "queued")
            waiting = await _quiet_memory(redis)
            ticket = await redis.memory_usage(keys.order(tickets[0],
                                                         keys.shard_of_order(tickets[0]) or 0))
        finally:
            await redis.aclose()
    return {"orders": args.orders, "tickets": args.tickets, "orders_s": round(took, 1),
            "bytes_per_decided_order": round((after - before) / args.orders),
            "record_bytes": record,
            "bytes_per_ticket": round((waiting - after) / args.tickets),
            "ticket_record_bytes": ticket}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    key = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    extra = SEALED.format(key=key, fingerprint=os.urandom(16).hex())
    day_ms = 86_400_000
    samples: list[dict[str, Any]] = []
    with stack(extra) as running, open(os.devnull, "w") as sink:
        port = running.kg_port
        redis = Redis.from_url(running.redis.url)
        settings = config.load(str(running_config(running)))
        directory = Directory(settings)
        stop_at = time.monotonic() + args.soak * 60
        placed = retired = exported = 0
        try:
            # every code the soak will sell, imported first: stock (and the fingerprints of
            # every code ever imported, C2's record) then only shrinks or stays
            await _import(port, int(args.rate * args.soak * 60 * 1.2) + 1000)
            next_step = time.monotonic() + 10
            while time.monotonic() < stop_at:
                second = time.monotonic()
                # buyers come back (a bounded set): each new buyer adds a purchase count
                ids = await _post_all(port, "bench-sku", int(args.rate), args.concurrency,
                                      f"s{(placed // int(args.rate)) % args.buyer_sets}-")
                placed += len(ids)
                if time.monotonic() >= next_step:
                    next_step += 10
                    now = int(time.time() * 1000)
                    for shard in range(settings.redis.shards):
                        retired += await retention.retire(redis, shard,
                                                          now + day_ms - args.keep * 1000,
                                                          86400, rounds=1000)
                    exported += await export_once(redis, directory, sink, 0, False)
                    found: Any = await redis.info("memory")
                    audit = sum([int(await redis.memory_usage(keys.issued(shard)) or 0)
                                 for shard in range(settings.redis.shards)])
                    used = int(found["used_memory"])
                    samples.append({"t_s": round(args.soak * 60 - (stop_at - time.monotonic())),
                                    "used_mb": round(used / 2**20, 2),
                                    "audit_mb": round(audit / 2**20, 2),
                                    "without_audit_mb": round((used - audit) / 2**20, 2),
                                    "placed": placed, "retired": retired})
                    print(samples[-1], flush=True)
                await asyncio.sleep(max(0.0, 1 - (time.monotonic() - second)))
        finally:
            await redis.aclose()
    warm = samples[len(samples) // 4:]
    return {"minutes": args.soak, "placed": placed, "retired": retired, "exported": exported,
            **{f"{name}_{when}": row[name] for name in ("used_mb", "audit_mb",
                                                         "without_audit_mb")
               for when, row in (("first_quarter_end", warm[0]), ("end", samples[-1]))},
            "without_audit_mb_max_after_first_quarter": max(
                x["without_audit_mb"] for x in warm)} if samples else {}


def running_config(running: Any) -> Path:
    """The config file bench.e2e's stack wrote for this run."""
    return Path(running.redis.data_dir).parent / "bench.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--tickets", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--soak", type=float, default=0, help="minutes of retention soak")
    parser.add_argument("--rate", type=float, default=200, help="orders a second (soak)")
    parser.add_argument("--buyer-sets", type=int, default=50,
                        help="buyers come back: rate x this many distinct buyers (soak)")
    parser.add_argument("--keep", type=int, default=30,
                        help="seconds an order stays after it was decided (soak)")
    parser.add_argument("--ziplist-value", type=int, default=0,
                        help="set hash-max-ziplist-value first (default: as started, 1024)")
    args = parser.parse_args()
    found = asyncio.run(soak(args) if args.soak else measure(args))
    print(json.dumps(found, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
