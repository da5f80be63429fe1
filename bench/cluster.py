"""Orders/s on a three-master Redis Cluster on loopback against one Redis, same machine, same
load tool: two kamigates as bench.e2e starts them (one front door, one worker, 4 shards),
one on a redis-server, one on a cluster of three (`[redis] cluster = true`), both running for
the whole run; wrk -t1 -cC wait-mode orders against each in turn (A B, then B A), the ratio
per round and its median, with the CPU each process spent per order.

Usage:  python -m bench.cluster [--seconds 3] [--rounds 6] [--connections 64]
Needs:  wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
from typing import Any

from bench.e2e import _import, _measure, stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench.cluster needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, Any]]] = {"one redis": [], "cluster": []}
    with stack() as single, stack(cluster=True) as clustered:
        stacks = {"one redis": single, "cluster": clustered}
        for s in stacks.values():
            asyncio.run(_import(s.kg_port, args.rounds * args.seconds * 20000 + 100_000))
        for r in range(args.rounds):
            order = ("one redis", "cluster") if r % 2 == 0 else ("cluster", "one redis")
            for name in order:
                s = stacks[name]
                runs[name].append(_measure(s.kg_port, s.pids, args))
            one, many = runs["one redis"][-1], runs["cluster"][-1]
            print(f"round {r + 1}: cluster/one {many['rps'] / one['rps']:.2f}; one redis "
                  f"{one['rps']:.0f}/s (p99 {one['p99_ms']} ms, CPU us/order "
                  f"{one['cpu_us']}), cluster {many['rps']:.0f}/s (p99 {many['p99_ms']} ms, "
                  f"CPU us/order {many['cpu_us']}; non-2xx {many['non2xx']})", flush=True)
    med = statistics.median
    ratios = [m["rps"] / o["rps"] for m, o in zip(runs["cluster"], runs["one redis"],
                                                  strict=True)]
    print()
    print(f"{args.rounds} rounds of {args.seconds}s, wrk -t1 -c{args.connections}, "
          f"wait mode; medians (ratio range {min(ratios):.2f}-{max(ratios):.2f})")
    for name, rows in runs.items():
        print(f"{name:<12}{med(x['rps'] for x in rows):>10.0f}/s  p50 "
              f"{med(x['p50_ms'] for x in rows):.2f} ms  p99 {med(x['p99_ms'] for x in rows):.2f}"
              f" ms")
    print(f"cluster / one redis: {med(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
