"""Where the time goes: py-spy samples the front door and the worker while wrk drives
kamigate (wait-mode orders, or the overload path with --overload), and prints the functions
with the most samples of their own (self time) and the modules they belong to.

Usage:  python -m bench.profile [--seconds 8] [--overload] [--top 15]
        (needs wrk and py-spy: pip install py-spy; py-spy needs ptrace rights, e.g. root)
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from bench.e2e import _import, stack, wrk

OVERLOAD = """
[limits]
global = { rate = 800, burst = 800 }
[waiting_room]
capacity = 20000
"""


def _record(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "250",
         "--format", "raw", "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(raw: Path, top: int) -> str:
    """Self samples per function and per area (engine, aiohttp, redis-py, asyncio...)."""
    own: collections.Counter[str] = collections.Counter()
    area: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or not stack:
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        own[leaf] += n
        where = leaf.rpartition("(")[2]
        area[_area(where)] += n
    lines = [f"{total} samples", "by area (self time):"]
    lines += [f"  {share(n, total):>6}  {name}" for name, n in area.most_common()]
    lines.append(f"top {top} functions (self time):")
    lines += [f"  {share(n, total):>6}  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def share(n: int, total: int) -> str:
    return f"{100 * n / max(total, 1):.1f}%"


def _area(where: str) -> str:
    for marker, name in (("engine/", "kamigate (engine/)"), ("aiohttp", "aiohttp"),
                         ("redis/", "redis-py"), ("hiredis", "redis-py"),
                         ("asyncio", "asyncio/uvloop"), ("uvloop", "asyncio/uvloop"),
                         ("msgspec", "msgspec"), ("prometheus", "prometheus-client"),
                         ("multidict", "aiohttp"), ("yarl", "aiohttp")):
        if marker in where:
            return name
    return "other (stdlib, C)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--overload", action="store_true",
                        help="global rate 800/s, so most answers are tickets or 429")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    for tool in ("wrk", "py-spy"):
        if shutil.which(tool) is None:
            print(f"bench.profile needs {tool}", file=sys.stderr)
            return 2
    with stack(OVERLOAD if args.overload else "") as s, \
            tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_import(s.kg_port, 400_000))
        outputs = {"front door": Path(tmp) / "door.txt", "worker": Path(tmp) / "worker.txt"}
        spies = [_record(s.door.pid, args.seconds, outputs["front door"]),
                 _record(s.worker.pid, args.seconds, outputs["worker"])]
        result: dict[str, float] = {}
        load = threading.Thread(target=lambda: result.update(
            rps=wrk(s.kg_port, args.seconds, args.connections)["rps"]))
        load.start()
        load.join()
        for spy in spies:
            spy.wait(60)
        mode = "overload (tickets and 429)" if args.overload else "wait-mode orders"
        print(f"kamigate, {mode}: {result.get('rps', 0):.0f} answers/s under py-spy\n")
        for name, path in outputs.items():
            print(f"== {name} ==")
            print(summarize(path, args.top) if path.exists() else "(no samples)")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
