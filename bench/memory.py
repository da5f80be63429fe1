"""Redis memory per decided order and per waiting ticket, with sealed codes.

One kamigate (front door, worker, redis-server) as bench.e2e starts it, with `[codes]` keys
(every code sealed at rest). N codes are imported; then N orders of one code each, every one
from its own buyer, are placed over HTTP and fulfilled; the growth of Redis' `used_memory`
between the two quiet points, divided by N, is what a decided order costs before the
retention removes it (its record with the sealed code, its stream entries until trimmed, its
index and issuance-audit entries; minus its code's place in the lot, which it took over).
Then M orders for a SKU without stock wait as tickets: the growth divided by M is a ticket's
cost. MEMORY USAGE of one record of each kind shows the record's share.

Usage:  python -m bench.memory [--orders 20000] [--tickets 5000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.e2e import ADMIN_KEY, STOREFRONT_KEY, stack
from engine.store import keys

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
    codes = "\n".join(f"CARD-{i:012d}-{os.urandom(6).hex()}" for i in range(n))
    url = f"http://127.0.0.1:{port}/admin/skus/bench-sku/stock?lot=mem"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"}
    async with aiohttp.ClientSession() as s, s.post(url, data=codes, headers=headers) as r:
        assert r.status == 200, await r.text()


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--tickets", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ziplist-value", type=int, default=0,
                        help="set hash-max-ziplist-value first (default: as started, 1024)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
