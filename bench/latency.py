"""Latency at half load: p50/p99 of wait-mode orders when kamigate is offered about half the
rate it sustains flat out (and the ceiling the same offered rate, for comparison).

Each round measures kamigate's full rate with `wrk -t1 -c64` (as bench.e2e), then offers half
of it: every connection pauses between requests (bench/post_order_paced.lua), so the rate
is set by the pause, not by how fast answers come. Rounds alternate; medians are reported.

Usage:  python -m bench.latency [--rounds 5] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any

from bench.e2e import HERE, _import, stack, wrk

CONNECTIONS = 64


def paced(port: int, seconds: int, rate: float) -> dict[str, Any]:
    """wrk offering about `rate` requests/s over CONNECTIONS connections."""
    pause_ms = max(0, int(CONNECTIONS / rate * 1000) - 1)
    env = {**os.environ, "KG_DELAY_MS": str(pause_ms),
           "KG_BASE_SCRIPT": str(HERE / "post_order.lua")}
    out = subprocess.run(
        ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency",
         "-s", str(HERE / "post_order_paced.lua"), f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True, env=env).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench.latency needs wrk", file=sys.stderr)
        return 2
    import asyncio

    rows: list[dict[str, float]] = []
    with stack() as s:
        asyncio.run(_import(s.kg_port, 25_000 * args.seconds * args.rounds * 2))
        for r in range(args.rounds):
            full = wrk(s.kg_port, 3, CONNECTIONS)["rps"]
            half = full / 2
            targets = [("kamigate", s.kg_port), ("ceiling", s.hello_port)]
            if r % 2:
                targets.reverse()
            found = {name: paced(port, args.seconds, half) for name, port in targets}
            row = {"full": full, "offered": half,
                   "kg_rps": found["kamigate"]["rps"], "kg_p50": found["kamigate"]["p50_ms"],
                   "kg_p99": found["kamigate"]["p99_ms"],
                   "ceiling_p99": found["ceiling"]["p99_ms"],
                   "errors": found["kamigate"]["non2xx"] + found["kamigate"]["errors"]}
            rows.append(row)
            print(f"round {r + 1}: full {full:.0f}/s; at {row['kg_rps']:.0f}/s kamigate p50 "
                  f"{row['kg_p50']:.1f} ms p99 {row['kg_p99']:.1f} ms (ceiling p99 "
                  f"{row['ceiling_p99']:.1f} ms), non-2xx {row['errors']}", flush=True)
    med = statistics.median
    print(f"\nmedians over {args.rounds} rounds: full rate {med(r['full'] for r in rows):.0f}/s; "
          f"at half load ({med(r['kg_rps'] for r in rows):.0f}/s) p50 "
          f"{med(r['kg_p50'] for r in rows):.1f} ms, p99 {med(r['kg_p99'] for r in rows):.1f} "
          f"ms (ceiling at the same rate: p99 {med(r['ceiling_p99'] for r in rows):.1f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
