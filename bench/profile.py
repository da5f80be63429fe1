"""Where the time goes: py-spy samples the front door and the worker while wrk drives
kamigate (wait-mode orders, or the overload path with --overload), and prints the functions
with the most samples of their own (self time), the modules they belong to, and kamigate's
functions with everything they call (inclusive time: the stages of an order).

Usage:  python -m bench.profile [--seconds 8] [--overload] [--top 15] [--raw DIR]
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
    within: collections.Counter[str] = collections.Counter()  # kamigate's, inclusive
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
        for function in {frame.rpartition(":")[0] for frame in stack.split(";")}:
            if "engine/" in function and "engine/cli" not in function \
                    and "engine/__main__" not in function:
                within[function + ")"] += n
    lines = [f"{total} samples", "by area (self time):"]
    lines += [f"  {share(n, total):>6}  {name}" for name, n in area.most_common()]
    lines.append(f"top {top} functions (self time):")
    lines += [f"  {share(n, total):>6}  {name}" for name, n in own.most_common(top)]
    lines.append(f"top {top} kamigate functions (inclusive: with all they call):")
    lines += [f"  {share(n, total):>6}  {name}" for name, n in within.most_common(top)]
    return "\n".join(lines)


def share(n: int, total: int) -> str:
    return f"{100 * n / max(total, 1):.1f}%"


def _area(where: str) -> str:
    # The loop's own native time (uvloop's C code, epoll, the socket reads it makes) has
    # no Python frame of its own: py-spy counts it to the frame that runs the loop.
    for marker, name in (("engine/http/serving.py", "asyncio/uvloop"),
                         ("engine/cli/support.py", "asyncio/uvloop"),
                         ("engine/", "kamigate (engine/)"), ("aiohttp", "aiohttp"),
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
    parser.add_argument("--raw", type=Path, help="also keep py-spy's stacks in this folder "
                        "(door.txt, worker.txt: one collapsed stack and its count a line)")
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
        if args.raw is not None:
            args.raw.mkdir(parents=True, exist_ok=True)
            for path in outputs.values():
                if path.exists():
                    shutil.copy(path, args.raw / path.name)
        for name, path in outputs.items():
            print(f"== {name} ==")
            print(summarize(path, args.top) if path.exists() else "(no samples)")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
