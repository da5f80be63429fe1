"""Two front doors side by side: this tree's and another checkout's, on one Redis and one worker.

For a door change worth a few percent, which bench.e2e's ratio to the ceiling cannot resolve on
a machine whose speed drifts: both doors serve the same Redis and worker (this tree's), `wrk
-t1 -c64` drives them in turn (A B, then B A), and each round gives both doors' CPU per order
and orders/s; the change is the per-round ratio, this door against the other, and its median.

Usage:  python -m bench.door_ab --base DIR [--rounds 10] [--seconds 3] [--connections 64]
        DIR: a checkout of the version to compare with (e.g. `git worktree add /tmp/base
        HEAD~1`), its matching kernel built if it should be (`python setup.py build_ext
        --inplace`); its door runs with PYTHONPATH=DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.e2e import _config, _import, _wait_port, cpu_seconds, stack, wrk
from engine.cli.support import stop_processes
from engine.store.embedded import free_port


def _round(port: int, pid: int, seconds: int, connections: int) -> dict[str, float]:
    before = cpu_seconds(pid)
    run = wrk(port, seconds, connections)
    served = max(run["requests"], 1)
    return {"rps": run["requests"] / seconds, "cpu_us": (cpu_seconds(pid) - before) * 1e6 / served,
            "non2xx": run.get("non2xx", 0)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    base = Path(args.base).resolve()
    if not (base / "engine" / "__init__.py").exists():
        raise SystemExit(f"{base} is not a kamigate checkout")
    rows: dict[str, list[dict[str, float]]] = {"this": [], "base": []}
    with stack() as s:
        data = Path(s.redis.data_dir).parent
        port = free_port()
        (data / "base").mkdir()
        config = _config(data / "base", port, s.redis.url)
        env = {**os.environ, "PYTHONPATH": str(base)}
        other = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--config",
                                  str(config), "--processes", "1"], env=env, cwd=base,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            asyncio.run(_import(s.kg_port, args.rounds * args.seconds * 2 * 20_000 + 100_000))
            doors = {"this": (s.kg_port, s.door.pid), "base": (port, other.pid)}
            for door_port, pid in doors.values():  # warm both up
                _round(door_port, pid, 1, args.connections)
            for r in range(args.rounds):
                for name in ("this", "base") if r % 2 == 0 else ("base", "this"):
                    door_port, pid = doors[name]
                    rows[name].append(_round(door_port, pid, args.seconds, args.connections))
                this, then = rows["this"][-1], rows["base"][-1]
                print(f"round {r + 1}: this {this['rps']:.0f}/s {this['cpu_us']:.1f} us/order; "
                      f"base {then['rps']:.0f}/s {then['cpu_us']:.1f} us/order; CPU ratio "
                      f"{this['cpu_us'] / then['cpu_us']:.3f}", flush=True)
        finally:
            stop_processes(other)
    cpu = [t["cpu_us"] / b["cpu_us"] for t, b in zip(rows["this"], rows["base"], strict=True)]
    rps = [t["rps"] / b["rps"] for t, b in zip(rows["this"], rows["base"], strict=True)]
    med = statistics.median
    return {"rounds": args.rounds, "cpu_ratio_median": round(med(cpu), 3),
            "cpu_ratio_range": [round(min(cpu), 3), round(max(cpu), 3)],
            "rps_ratio_median": round(med(rps), 3),
            "this_cpu_us": round(med(x["cpu_us"] for x in rows["this"]), 1),
            "base_cpu_us": round(med(x["cpu_us"] for x in rows["base"]), 1),
            "non2xx": sum(x["non2xx"] for r in rows.values() for x in r)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="checkout of the version to compare with")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    found = measure(parser.parse_args())
    print(found)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
