"""Coupon orders and campaigns: what a coupon costs a wait-mode order, and how fast a limited
campaign is issued to a flash crowd, never beyond its total.

One kamigate as in bench.points, plus `coupon-sku` (price 1000), a template `bench-off` (300
off, any number per buyer) and limited ones (per_buyer 1, `total`). In one run:
1. plain, points and coupon orders (wrk -t1 -c64, wait mode) in rounds rotating the three,
   ratios per round and their medians, each run's settling and CPU per order as in
   bench.points. A coupon order, {"sku": "coupon-sku", "qty": 1, "buyer": B, "coupons": [C],
   "points": 700}, is fulfilled at once; C is one of B's coupons issued beforehand and not
   used yet (wrk reads (buyer, code) pairs from a file). A points order pays 1000 points.
2. flash crowds (64 connections, then 1,000) issuing to new buyers until `total` is taken:
   issues/s, then 409 coupon_limit/s; K2 (counter, coupons in Redis and 201 answers each
   exactly `total`), the coupon reconciliation (K1-K3) and P1 on every wallet.

Usage:  python -m bench.coupons [--quick] [--seconds 3] [--rounds 6] [--connections 64]
            [--buyers 10000] [--total 20000] [--crowd 1000] [--crowd-s 30] [--after 2]
Needs:  wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from bench.e2e import HERE, STOREFRONT_KEY, Stack, cpu_seconds, stack
from bench.points import (
    POINTS_CONFIG,
    SHARDS,
    _grant,
    _import,
    _issued,
    _raise_nofile,
    _row,
    _settled,
    _wallets,
    measure,
)
from engine.config.loading import load
from engine.store import wallet_keys
from engine.wallet.coupon_reconcile import reconcile_coupons

SKU, PRICE, OFF = "coupon-sku", 1000, 300
CONFIG = POINTS_CONFIG + f"""
[[skus]]
id = "{SKU}"
max_qty = 10
price = {PRICE}
[[coupon_templates]]
id = "bench-off"
kind = "amount"
amount = {OFF}
per_buyer = 0
"""
SIDES = ("plain", "points", "coupon")
PAID = {"plain": 0, "points": PRICE, "coupon": PRICE - OFF}  # points per order
PAIRS = (("coupon", "plain"), ("points", "plain"), ("coupon", "points"))  # ratios shown


def _limited(crowd: int, total: int) -> str:
    """The limited template of the flash crowd of `crowd` connections."""
    return (f'[[coupon_templates]]\nid = "flash-{crowd}"\nkind = "amount"\namount = {OFF}\n'
            f"per_buyer = 1\ntotal = {total}\n")


def _wrk(port: int, connections: int, seconds: int, *args: str,
         outcomes: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s",
         "-s", str(HERE / "post_coupons.lua"), f"http://127.0.0.1:{port}", "--", *args],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "KG_OUTCOMES": "1" if outcomes else "0"})


def _result(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate()
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


async def _issue(port: int, template: str, buyers: list[str]) -> list[tuple[str, str]]:
    """One coupon of `template` per entry of `buyers` through the public route, by 64
    clients: (buyer, code) in the order given."""
    codes = [""] * len(buyers)
    todo = iter(enumerate(buyers))
    url = f"http://127.0.0.1:{port}/v1/buyers/{{}}/coupons"
    auth = {"Authorization": f"Bearer {STOREFRONT_KEY}"}
    async with aiohttp.ClientSession(headers=auth) as session:
        async def client() -> None:
            for i, buyer in todo:
                async with session.post(url.format(buyer), json={"template": template}) as r:
                    assert r.status == 201, await r.text()
                    codes[i] = (await r.json())["code"]
        await asyncio.gather(*(client() for _ in range(64)))
    return list(zip(buyers, codes, strict=True))


def _snap(s: Stack) -> tuple[float, dict[str, float]]:
    return time.monotonic(), {name: cpu_seconds(pid) for name, pid in s.pids.items()}


def _per(a: dict[str, float], b: dict[str, float], n: int) -> dict[str, float]:
    return {name: round((b[name] - a[name]) * 1e6 / max(n, 1), 1) for name in a}


class Coupons:
    """The coupons of `bench-off` issued and not yet named by an order, in wrk's order."""

    def __init__(self, port: int, buyers: int, path: Path) -> None:
        self.port, self.buyers, self.path = port, buyers, path
        self.free: list[tuple[str, str]] = []
        self.issued = 0

    def top_up(self, need: int) -> None:
        """At least `need` unused coupons, buyers in turn."""
        names = [f"cb-{(self.issued + i) % self.buyers}" for i in range(need - len(self.free))]
        self.free += asyncio.run(_issue(self.port, "bench-off", names))
        self.issued += len(names)

    def run(self, s: Stack, connections: int, seconds: int) -> dict[str, Any]:
        """One wrk run of coupon orders, costed as bench.points.measure costs its runs."""
        self.path.write_text("".join(f"{b} {c}\n" for b, c in self.free))
        _, before = _snap(s)
        issued = asyncio.run(_issued(s.kg_port, SKU))
        run = _result(_wrk(s.kg_port, connections, seconds, "order", SKU, str(PRICE - OFF),
                           str(self.path)))
        del self.free[:run["requests"] + connections]  # answered, or sent when wrk stopped
        time.sleep(0.1)
        still_open, left, waited = asyncio.run(_settled(s, SKU, 0.1, 5.0))
        done = asyncio.run(_issued(s.kg_port, SKU)) - issued
        run.update(open=still_open, left=left, settle_s=0.1 + waited, fulfilled=done,
                   sustained=done / (run["seconds"] + 0.1 + waited),
                   cpu_us=_per(before, _snap(s)[1], run["requests"]))
        return run


def flash(s: Stack, total: int, crowd: int, after: float, cap_s: int) -> dict[str, Any]:
    """A flash crowd of `crowd` connections on template flash-<crowd>, for at most cap_s:
    issues/s until `total` are taken (from the first seen to the last, its counter polled
    every 5 ms), 409s/s for `after` seconds more, and the CPU per coupon and per 409."""
    counter, key = SyncRedis.from_url(s.redis.url), wallet_keys.template_issued(f"flash-{crowd}")
    t0, _ = _snap(s)
    proc = _wrk(s.kg_port, crowd, cap_s, "issue", f"flash-{crowd}", f"fc{crowd}-",
                outcomes=True)
    first: tuple[int, float, dict[str, float]] | None = None  # (taken, when, CPU)
    while proc.poll() is None:
        n = int(counter.get(key) or 0)
        if n >= total:
            break
        if n and first is None:
            first = (n, *_snap(s))
        time.sleep(0.005)
    n2, (t2, c2) = int(counter.get(key) or 0), _snap(s)
    counter.close()
    (n1, t1, c1), full = first or (n2, t2, c2), n2 >= total
    time.sleep(after if full else 0)
    proc.send_signal(signal.SIGINT)
    t3, c3 = _snap(s)
    run = _result(proc)
    limit = run["outcomes"].get("limit", 0)
    run.update(crowd=crowd, rate=(n2 - n1) / max(t2 - t1, 1e-3), full=full,
               answered=run["outcomes"].get("issued", 0) / max(t2 - t0, 1e-3),
               limit_rate=limit / max(t3 - t2, 1e-3), taken_s=t2 - t0,
               issue_us=_per(c1, c2, n2 - n1), limit_us=_per(c2, c3, limit))
    return run


async def _check(s: Stack) -> dict[str, Any]:
    """After everything settled: each template's counter and coupons in Redis, the coupon
    reconciliation, every wallet's counters."""
    redis = Redis.from_url(s.redis.url)
    settings = load(s.redis.data_dir.parent / "bench.toml")
    try:
        t0 = time.monotonic()
        report = await reconcile_coupons(redis, settings)
        took = time.monotonic() - t0
        found: Counter[str] = Counter()
        for shard in range(SHARDS):
            pipe = redis.pipeline(transaction=False)
            async for name in redis.scan_iter(wallet_keys.coupon("", shard) + "*", 1000):
                pipe.hget(name, "t")
            found.update(x.decode() for x in await pipe.execute())
        counters = {t.id: int(await redis.get(wallet_keys.template_issued(t.id)) or 0)
                    for t in settings.coupon_templates}
    finally:
        await redis.aclose()
    _, wallets = await _wallets(s.redis.url, "cb-0")
    return {"found": found, "counters": counters, "all": report.coupons,
            "violations": report.violations, "reconcile_s": took, "wallets": wallets}


def _ratios(rows: dict[str, list[dict[str, Any]]], a: str, b: str, key: str = "rps"
            ) -> str:
    r = [x[key] / y["rps"] for x, y in zip(rows[a], rows[b], strict=True)]
    return f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"


def rounds(s: Stack, args: argparse.Namespace, pool: Coupons
           ) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """The ratio rounds, after a 1-s warm-up of each side: the runs by side, and the points
    spent by every order fulfilled (warm-ups too)."""
    rows: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    spent, warm = 0, 0.0

    def one(side: str, seconds: int) -> dict[str, Any]:
        nonlocal spent
        if side == "coupon":  # enough coupons for 1.3x the last rate (at first: plain's)
            rate = max([x["rps"] for x in rows["coupon"]] or [warm])
            pool.top_up(int(1.3 * rate * seconds) + 2 * args.connections)
            run = pool.run(s, args.connections, seconds)
        else:
            run = measure(s, "bench-sku" if side == "plain" else SKU, args.connections,
                          seconds, args.buyers, PAID[side], prefix="cb-")
        spent += PAID[side] * run["fulfilled"]
        return run

    warm = one("plain", 1)["rps"]
    for side in SIDES[1:]:
        one(side, 1)
    for r in range(args.rounds):
        for side in SIDES[r % 3:] + SIDES[:r % 3]:
            rows[side].append(one(side, args.seconds))
        print(f"round {r + 1}: " + "; ".join(
            f"{side} {x[-1]['rps']:.0f}/s ({x[-1]['fulfilled']} fulfilled, {x[-1]['non2xx']} "
            f"non-2xx, settled {x[-1]['settle_s']:.2f} s, CPU us/order {x[-1]['cpu_us']})"
            for side, x in rows.items())
            + f"; pairs reused {rows['coupon'][-1]['outcomes'].get('reused', 0)}", flush=True)
    return rows, spent


def report(args: argparse.Namespace, rows: dict[str, list[dict[str, Any]]], spent: int,
           crowds: list[dict[str, Any]], check: dict[str, Any]) -> bool:
    """Print the tables; whether every check held."""
    print(f"\n{args.rounds} rounds of {args.seconds} s, wrk -t1 -c{args.connections}, "
          f"{args.buyers} buyers; medians; sustained: fulfilled / (load + settling) seconds")
    print(f"{'':<32}{'orders/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'settle s':>9}"
          f"{'sustained':>11}")
    for side in SIDES:
        print(_row(f"{side} wait-mode order", rows[side]))
    print("; ".join(f"{a} / {b}: {_ratios(rows, a, b)}" for a, b in PAIRS)
          + f"; sustained coupon / plain: {_ratios(rows, 'coupon', 'plain', 'sustained')}")
    print("CPU us/order (median): " + "; ".join(f"{side} " + ", ".join(
        f"{n} {statistics.median(x['cpu_us'][n] for x in rows[side]):.0f}"
        for n in rows[side][0]["cpu_us"]) for side in SIDES))
    ok = not check["violations"]
    for c in crowds:
        o, name = c["outcomes"], f"flash-{c['crowd']}"
        taken, found, answered = check["counters"][name], check["found"][name], o.get("issued")
        exact = taken == found == answered == args.total
        ok = ok and exact
        until = "all taken" if c["full"] else "NOT all taken: stopped"
        print(f"\nflash crowd, {c['crowd']} connections, total {args.total}: {c['rate']:.0f} "
              f"issues/s, {c['answered']:.0f} 201/s ({until} {c['taken_s']:.1f} s after the "
              f"start), then {c['limit_rate']:.0f} 409/s; p50 {c['p50_ms']:.1f} ms, p99 "
              f"{c['p99_ms']:.1f} ms; socket errors {c['errors']}; {o}")
        print(f"  CPU us per coupon {c['issue_us']}"
              + (f"; per 409 {c['limit_us']}" if o.get("limit") else ""))
        print(f"  K2: counter {taken}, coupons in Redis {found}, 201 answers {answered}: "
              f"{'OVER-ISSUED' if max(taken, found) > args.total else 'never over'}; "
              f"{'exactly total' if exact else 'NOT exactly total'} (slots taken but no "
              f"coupon: {taken - found}; coupons not answered 201: {found - (answered or 0)})")
    w = check["wallets"]
    p1 = w["balance"] + w["reserved"] + w["spent"] == w["granted"] and w["spent"] == spent
    print(f"reconcile over {check['all']} coupons ({check['reconcile_s']:.0f} s): "
          f"{check['violations'][:5] or 'clean'}")
    print(f"every wallet: {w}; points spent by the orders fulfilled {spent}: P1 "
          f"{'holds' if p1 else 'BROKEN'}")
    return ok and p1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about 60 s")
    parser.add_argument("--seconds", type=int, default=3, help="per round and side")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--buyers", type=int, default=10_000)
    parser.add_argument("--total", type=int, default=20_000, help="of each limited template")
    parser.add_argument("--crowd", type=int, default=1000, help="flash-crowd connections")
    parser.add_argument("--crowd-s", type=int, default=30, help="at most, per crowd")
    parser.add_argument("--after", type=float, default=2.0, help="seconds of 409s")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.buyers, args.total, args.crowd = 1, 2, 1000, 2000, 200
    if shutil.which("wrk") is None:
        print("bench.coupons needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    print(_raise_nofile(args.crowd + 2048), flush=True)
    buyers = [f"cb-{i}" for i in range(args.buyers)]
    sizes = list(dict.fromkeys([args.connections, args.crowd]))
    config = CONFIG + "".join(_limited(c, args.total) for c in sizes)
    with tempfile.TemporaryDirectory() as tmp, stack(config) as s:
        t0 = time.monotonic()
        asyncio.run(_import(s.kg_port, "bench-sku", 25_000 * args.rounds * args.seconds + 50_000))
        asyncio.run(_import(s.kg_port, SKU, 40_000 * args.rounds * args.seconds + 50_000))
        asyncio.run(_grant(s.kg_port, buyers, 10**9))
        print(f"set-up: stock imported, {args.buyers} wallets granted, "
              f"{time.monotonic() - t0:.1f} s", flush=True)
        rows, spent = rounds(s, args, Coupons(s.kg_port, args.buyers, Path(tmp) / "pairs"))
        crowds = [flash(s, args.total, c, args.after, args.crowd_s) for c in sizes]
        check = asyncio.run(_check(s))
    ok = report(args, rows, spent, crowds, check)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows,
                                               "crowds": crowds, "check": check}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
