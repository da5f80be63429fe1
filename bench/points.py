"""Points orders: what paying with points costs a wait-mode order, at 10,000 connections and
on one hot wallet.

One kamigate (one front door, one worker, an embedded redis-server), two SKUs: `bench-sku`
(no price, as bench.e2e) and `points-sku` (price 100, `[points] per_unit = 100`). A points
order is `{"sku": "points-sku", "qty": 1, "buyer": B, "points": 100}`: cash_due 0, so it is
fulfilled at once; B runs over N buyers (default 10,000), each granted points beforehand
through POST /v1/buyers/{buyer}/points. A plain order is the same body for `bench-sku`
without points. In one run:

1. points orders/s against plain orders/s (wrk -t1 -c64, wait mode), rounds alternating
   A B / B A, the ratio per round and its median; after each round, how long the worker
   takes to settle (spend) the reservations its orders left open, and the CPU per order of
   each process up to then.
2. one hot wallet: 1,000 connections ordering for one buyer against the same connections
   spread over the N buyers; orders/s, then P1 on that wallet once settled (balance +
   reserved + spent = granted, reserved 0).
3. 10,000 connections, points orders: paced at half the sustained rate of part 1 (orders
   fulfilled per second of load plus settling; each connection pauses a random time between
   orders, and the first orders wait 3 s until every connection is open), then flat out
   (every connection always has an order in flight); p50/p99 and the answers by outcome.
   At the end, P1 on every wallet and every fulfilled order's points spent.

Usage:  python -m bench.points [--quick] [--seconds 3] [--rounds 6] [--connections 64]
            [--buyers 10000] [--many 10000] [--many-seconds 10] [--offer RATE]
            [--hot-connections 1000] [--hot-seconds 5]
Needs:  wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.e2e import ADMIN_KEY, HERE, STOREFRONT_KEY, Stack, cpu_seconds, stack
from engine.store import wallet_keys
from engine.wallet import ledger

SHARDS = 4  # bench.e2e's config
POINTS_CONFIG = """
[[skus]]
id = "points-sku"
max_qty = 10
price = 100
[pricing]
currency = "CNY"
[points]
enabled = true
per_unit = 100
grants_per_minute = 0
"""
PRICE = 100  # points per order: the whole price


def wrk(port: int, seconds: int, connections: int, sku: str, buyers: int, points: int,
        prefix: str = "pb-", outcomes: bool = False, pause_ms: int = 0, hold_s: int = 0
        ) -> dict[str, Any]:
    """wrk with bench/post_points.lua; paced runs (pause_ms) open every connection during
    hold_s first, and that time is not counted."""
    env = {**os.environ, "KG_OUTCOMES": "1" if outcomes else "0", "KG_DELAY_MS": str(pause_ms),
           "KG_HOLD_MS": str(hold_s * 1000), "KG_CONNECTIONS": str(connections)}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds + hold_s}s", "--latency",
         "--timeout", "30s",
         "-s", str(HERE / "post_points.lua"), f"http://127.0.0.1:{port}",
         "--", sku, str(buyers), str(points), prefix],
        capture_output=True, text=True, check=True, env=env).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    result["seconds"] -= hold_s
    result["rps"] = result["requests"] / result["seconds"]
    return result


async def _import(port: int, sku: str, n: int) -> None:
    url = f"http://127.0.0.1:{port}/admin/skus/{sku}/stock?lot=l{n}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"}
    codes = "\n".join(f"{sku.upper()}-{i:09d}" for i in range(n))
    async with aiohttp.ClientSession() as s, s.post(url, data=codes, headers=headers) as r:
        assert r.status == 200, await r.text()


async def _grant(port: int, buyers: list[str], points: int) -> None:
    """Grant `points` to each buyer through the public route, 64 requests in flight."""
    gate = asyncio.Semaphore(64)
    headers = {"Authorization": f"Bearer {STOREFRONT_KEY}"}
    async with aiohttp.ClientSession() as s:
        async def one(buyer: str) -> None:
            async with gate, s.post(f"http://127.0.0.1:{port}/v1/buyers/{buyer}/points",
                                    json={"points": points, "reason": "bench"},
                                    headers=headers) as r:
                assert r.status == 201, await r.text()
        await asyncio.gather(*(one(b) for b in buyers))


async def _issued(port: int, sku: str) -> int:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as s, \
            s.get(f"http://127.0.0.1:{port}/admin/skus/{sku}", headers=headers) as r:
        return int((await r.json())["issued"])


async def _settled(s: Stack, sku: str, calm_s: float, quiet_s: float
                   ) -> tuple[int, int, float]:
    """After a run: (reservations open when it ended, reservations still open when settling
    stopped, seconds until the last change). Settling stops once none is open and no code
    was issued for calm_s, or when nothing moved for quiet_s: what is open then waits for the
    worker's sweep (orders whose points were reserved but that never got in)."""
    redis = Redis.from_url(s.redis.url)
    started = moved = time.monotonic()
    seen: tuple[int, int] | None = None
    first = -1
    try:
        while True:
            now = (sum([int(await redis.zcard(wallet_keys.open_reservations(shard)))
                        for shard in range(SHARDS)]), await _issued(s.kg_port, sku))
            first = now[0] if first < 0 else first
            if seen is not None and now != seen:
                moved = time.monotonic()
            calm = time.monotonic() - moved
            if (now[0] == 0 and seen is not None and calm >= calm_s) or calm >= quiet_s:
                return first, now[0], moved - started
            seen = now
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def _wallets(url: str, buyer: str) -> tuple[dict[str, int], dict[str, int]]:
    """(the counters of one buyer's wallet, every wallet's counters summed)."""
    redis = Redis.from_url(url)
    try:
        one = await ledger.counters(redis, SHARDS, "bench", buyer)
        return one, await ledger.totals(redis, SHARDS, int(time.time() * 1000), 60_000)
    finally:
        await redis.aclose()


def measure(s: Stack, sku: str, connections: int, seconds: int, buyers: int, points: int,
            calm_s: float = 0.1, quiet_s: float = 5.0, **kw: Any) -> dict[str, Any]:
    """One wrk run, then the wait until its orders are settled (points spent). CPU per order
    of each process is counted through that wait: the whole cost of the orders."""
    before = {name: cpu_seconds(pid) for name, pid in s.pids.items()}
    issued = asyncio.run(_issued(s.kg_port, sku))
    run = wrk(s.kg_port, seconds, connections, sku, buyers, points, **kw)
    time.sleep(0.1)  # the answers still in flight when wrk stopped
    run["open"], run["left"], waited = asyncio.run(_settled(s, sku, calm_s, quiet_s))
    run["settle_s"] = 0.1 + waited if points else 0.0
    run["fulfilled"] = asyncio.run(_issued(s.kg_port, sku)) - issued
    # orders answered per second of load plus the settling it left behind
    run["sustained"] = run["fulfilled"] / (run["seconds"] + run["settle_s"])
    n = max(run["requests"], 1)
    run["cpu_us"] = {name: round((cpu_seconds(pid) - before[name]) * 1e6 / n, 1)
                     for name, pid in s.pids.items()}
    return run


def _raise_nofile(want: int) -> str:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return f"open files: {soft} (enough)"
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return f"open files: raised from {soft} to {new} (hard limit {hard})"


def _show(label: str, r: dict[str, Any]) -> None:
    print(f"{label}: {r['rps']:.0f}/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
          f"max {r['max_ms']:.0f} ms; socket errors {r['errors']} (timeouts "
          f"{r['timeouts']}); {r['outcomes']}; {r['open']} reservations open at the end, "
          f"settled {r['settle_s']:.2f} s later ({r['left']} left for the sweep); CPU us/order "
          f"{r['cpu_us']}", flush=True)


def _row(label: str, runs: list[dict[str, Any]]) -> str:
    med = statistics.median
    return (f"{label:<32}" + "".join(f"{med(x[k] for x in runs):>{w}.{d}f}" for k, w, d in (
        ("rps", 10, 0), ("p50_ms", 9, 1), ("p99_ms", 9, 1), ("settle_s", 9, 2),
        ("sustained", 11, 0))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 30 s")
    parser.add_argument("--seconds", type=int, default=3, help="per ratio round and side")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--many", type=int, default=10_000, help="connections, part 2")
    parser.add_argument("--many-seconds", type=int, default=10)
    parser.add_argument("--offer", type=float, default=0.0,
                        help="orders/s the paced run offers (default: half the sustained rate)")
    parser.add_argument("--hot-connections", type=int, default=1000)
    parser.add_argument("--hot-seconds", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.buyers = 1, 2, 1000
        args.many, args.many_seconds, args.hot_connections, args.hot_seconds = 1000, 2, 200, 1
    if shutil.which("wrk") is None:
        print("bench.points needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    print(_raise_nofile(args.many + 2048), flush=True)
    load_s = args.rounds * args.seconds + 2 * args.many_seconds + 2 * args.hot_seconds
    points_codes = 22_000 * load_s + 50_000
    plain_codes = 25_000 * args.rounds * args.seconds + 50_000
    buyers = [f"pb-{i}" for i in range(args.buyers)]
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "points": []}
    out: dict[str, Any] = {"args": vars(args), "rows": rows}
    with stack(POINTS_CONFIG) as s:
        t0 = time.monotonic()
        asyncio.run(_import(s.kg_port, "bench-sku", plain_codes))
        asyncio.run(_import(s.kg_port, "points-sku", points_codes))
        asyncio.run(_grant(s.kg_port, buyers, PRICE * (2 * points_codes // args.buyers + 10)))
        asyncio.run(_grant(s.kg_port, ["hot-0"], PRICE * points_codes))
        print(f"set-up: {plain_codes + points_codes} codes, {len(buyers) + 1} wallets "
              f"granted, {time.monotonic() - t0:.1f} s", flush=True)
        measure(s, "bench-sku", args.connections, 1, args.buyers, 0)  # warm-up
        measure(s, "points-sku", args.connections, 1, args.buyers, PRICE)
        for r in range(args.rounds):
            sides = ("plain", "points") if r % 2 == 0 else ("points", "plain")
            for side in sides:
                sku, pts = ("bench-sku", 0) if side == "plain" else ("points-sku", PRICE)
                rows[side].append(measure(s, sku, args.connections, args.seconds,
                                          args.buyers, pts))
            plain, paid = rows["plain"][-1], rows["points"][-1]
            print(f"round {r + 1}: ratio {paid['rps'] / plain['rps']:.3f}; plain "
                  f"{plain['rps']:.0f}/s ({plain['fulfilled']} fulfilled, {plain['non2xx']} "
                  f"non-2xx; CPU us/order {plain['cpu_us']}); points {paid['rps']:.0f}/s "
                  f"({paid['fulfilled']} fulfilled, {paid['non2xx']} non-2xx; {paid['open']} "
                  f"reservations open at the end, settled {paid['settle_s']:.2f} s later; "
                  f"CPU us/order {paid['cpu_us']})", flush=True)
        spread = measure(s, "points-sku", args.hot_connections, args.hot_seconds,
                         args.buyers, PRICE, outcomes=True)
        _show(f"{args.buyers} wallets, {args.hot_connections} connections", spread)
        hot = measure(s, "points-sku", args.hot_connections, args.hot_seconds, 1, PRICE,
                      prefix="hot-", outcomes=True)
        _show(f"one wallet, {args.hot_connections} connections", hot)
        wallet, _ = asyncio.run(_wallets(s.redis.url, "hot-0"))
        offered = args.offer or statistics.median(p["sustained"] for p in rows["points"]) / 2
        paced = measure(s, "points-sku", args.many, args.many_seconds, args.buyers, PRICE,
                        outcomes=True, pause_ms=int(args.many / offered * 1000), hold_s=3)
        _show(f"{args.many} connections, offered {offered:.0f}/s", paced)
        # the door still works through the orders of connections wrk has closed, with
        # pauses of several seconds: wait until nothing has moved for 15 s
        flat = measure(s, "points-sku", args.many, args.many_seconds, args.buyers, PRICE,
                       calm_s=15.0, quiet_s=15.0, outcomes=True)
        _show(f"{args.many} connections, flat out", flat)
        _, every = asyncio.run(_wallets(s.redis.url, "hot-0"))
        issued = asyncio.run(_issued(s.kg_port, "points-sku"))
    # P1 on the hot wallet, settled; on every wallet: P1, and every fulfilled order's points
    # spent (reservations of orders that never got in may wait for the sweep: reported)
    hot_ok = (wallet["balance"] + wallet["reserved"] + wallet["spent"] == wallet["granted"]
              and wallet["reserved"] == 0 and wallet["spent"] == PRICE * hot["fulfilled"])
    all_ok = (every["balance"] + every["reserved"] + every["spent"] == every["granted"]
              and every["spent"] == PRICE * issued)
    ratios = [p["rps"] / q["rps"] for p, q in zip(rows["points"], rows["plain"], strict=True)]
    kept = [p["sustained"] / q["rps"] for p, q in zip(rows["points"], rows["plain"],
                                                       strict=True)]
    med = statistics.median
    print(f"\n{args.rounds} rounds of {args.seconds} s, wrk -t1 -c{args.connections}, "
          f"{args.buyers} buyers; medians; sustained: fulfilled / (load + settling) seconds")
    print(f"{'':<32}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'settle s':>9}"
          f"{'sustained':>11}")
    print(_row("plain wait-mode order", rows["plain"]))
    print(_row("points wait-mode order", rows["points"]))
    print(_row(f"points, {args.hot_connections} conns", [spread]))
    print(_row(f"one wallet, {args.hot_connections} conns", [hot]))
    print(_row(f"points, {args.many} conns, paced", [paced]))
    print(_row(f"points, {args.many} conns, flat out", [flat]))
    print(f"points / plain: {med(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}); "
          f"sustained points / plain: {med(kept):.2f} ({min(kept):.2f}-{max(kept):.2f})")
    for label, run in (("paced", paced), ("flat out", flat), ("one wallet", hot)):
        print(f"outcomes, {label}: {run['outcomes']}, socket errors {run['errors']}")
    print(f"one wallet: {wallet}; P1 {'holds' if hot_ok else 'BROKEN'}")
    print(f"every wallet: {every}; {issued} points orders fulfilled; P1 and P2 "
          f"{'hold' if all_ok else 'BROKEN'}; {every['open']} reservations left for the sweep")
    if args.json:
        out.update(ratios=ratios, kept=kept, flat=flat, paced=paced, spread=spread, hot=hot,
                   wallet=wallet, every=every)
        Path(args.json).write_text(json.dumps(out))
    return 0 if hot_ok and all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
