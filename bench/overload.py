"""Overload benchmark: the ticket and rejection paths under 10x the configured rate.

kamigate runs with a global rate of a tenth of what the load tool offers, so nine orders in
ten are answered with a queue ticket (202, reason overflow) or, once the waiting line is
full, 429; the ceiling is the same hello-world POST handler as bench.e2e. Also checks that
the orders admitted at the configured rate are fulfilled at that rate (>= 95 %).

Usage:  python -m bench.overload [--seconds 4] [--rounds 6] [--rate 800] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.e2e import _fulfilled, _import, _measure, stack


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--rate", type=float, default=800.0,
                        help="configured global rate (orders/s); the load tool offers ~10x")
    parser.add_argument("--capacity", type=int, default=20000, help="waiting-line room")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--processes", type=int, default=1,
                        help="front-door processes (and as many ceiling processes)")
    args = parser.parse_args()
    extra = f"""
[limits]
global = {{ rate = {args.rate}, burst = {int(args.rate)} }}
[waiting_room]
capacity = {args.capacity}
"""
    ratios, answers, ceilings, fulfil_ratios = [], [], [], []
    with stack(extra, args.processes) as s:
        asyncio.run(_import(s.kg_port, int(args.rate * args.seconds * args.rounds * 2) + 100_000))
        for r in range(args.rounds):
            order = ("ceiling", "kamigate") if r % 2 == 0 else ("kamigate", "ceiling")
            for target in order:
                if target == "ceiling":
                    ceilings.append(_measure(s.hello_port, {"server": s.hello.pid}, args)["rps"])
                else:
                    before, t0 = asyncio.run(_fulfilled(s.kg_port)), time.monotonic()
                    run = _measure(s.kg_port, s.pids, args)
                    done = asyncio.run(_fulfilled(s.kg_port)) - before
                    answers.append(run["rps"])
                    fulfil_ratios.append(done / (time.monotonic() - t0) / args.rate)
            ratios.append(answers[-1] / ceilings[-1])
            print(f"round {r + 1}: answers {answers[-1]:.0f}/s vs ceiling "
                  f"{ceilings[-1]:.0f}/s = {ratios[-1]:.2f}; fulfilled at "
                  f"{fulfil_ratios[-1]:.0%} of the configured rate", flush=True)
    med = statistics.median
    print(f"\nconfigured {args.rate:.0f}/s, offered {med(answers) / args.rate:.0f}x; "
          f"{args.rounds} rounds of {args.seconds}s, wrk -t1 -c{args.connections}; "
          f"{args.processes} front-door process(es); medians")
    print(f"answers (202 ticket / 429) per second: {med(answers):.0f}; ceiling "
          f"{med(ceilings):.0f}; ratio {med(ratios):.2f} (range {min(ratios):.2f}-"
          f"{max(ratios):.2f})")
    print(f"fulfilled rate / configured rate: {med(fulfil_ratios):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
