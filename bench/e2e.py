"""End-to-end benchmark: kamigate against the aiohttp + uvloop hello-world ceiling.

Starts, on this machine: the ceiling server; kamigate (one front door, one worker, an embedded
redis-server); then drives each in turn with the same load tool (wrk, one connection pool) and
prints orders/s, p50 and p99 with the ratio to the ceiling. Then the batch route: 1,000 orders
per call, orders claimed end to end per second.

Rounds alternate the two targets (A B, B A, ...) and the ratio is taken per round, then the
median over rounds: the machine is shared and drifts, and a ratio of two runs a few seconds
apart is steadier than either number.

Usage:  python -m bench.e2e [--seconds 3] [--connections 64] [--rounds 8] [--processes 1]
Needs:  wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from engine import config
from engine.cli.support import stop_processes
from engine.store.embedded import RedisProcess, free_port
from loadtests.payloads import order
from tests.cluster import Cluster

HERE = Path(__file__).parent
STOREFRONT_KEY = "bench-shop-key"
ADMIN_KEY = "bench-admin-key"


def _config(data_dir: Path, port: int, redis_url: str, extra: str = "",
            cluster: bool = False) -> Path:
    text = f"""
[server]
port = {port}
public_url = "http://127.0.0.1:{port}"
max_body_bytes = 1048576
[redis]
url = "{redis_url}"
cluster = {"true" if cluster else "false"}
shards = 4
[orders]
default_wait_ms = 5000
[[storefronts]]
id = "bench"
key_sha256 = "{config.sha256_hex(STOREFRONT_KEY)}"
[[admins]]
id = "bench-ops"
role = "admin"
key_sha256 = "{config.sha256_hex(ADMIN_KEY)}"
[[skus]]
id = "bench-sku"
max_qty = 10
""" + extra
    path = data_dir / "bench.toml"
    path.write_text(text)
    return path


def _wait_port(port: int, timeout: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def _process(args: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if port:
            _wait_port(port)
        yield proc
    finally:
        stop_processes(proc)


class Stack:
    """What a benchmark runs against: kamigate (door, worker, Redis) and the ceiling."""

    def __init__(self, redis: RedisProcess, kg_port: int, hello_port: int,
                 door: subprocess.Popen[bytes], worker: subprocess.Popen[bytes],
                 hello: subprocess.Popen[bytes], more_redis: list[RedisProcess] | None = None
                 ) -> None:
        self.redis, self.kg_port, self.hello_port = redis, kg_port, hello_port
        self.door, self.worker, self.hello = door, worker, hello
        self.more_redis = more_redis or []  # the other masters of a cluster

    @property
    def pids(self) -> dict[str, int]:
        found = {"front door": self.door.pid, "worker": self.worker.pid,
                 "redis": self.redis.process.pid if self.redis.process else 0}
        for i, node in enumerate(self.more_redis, start=2):
            found[f"redis {i}"] = node.process.pid if node.process else 0
        return found


@contextmanager
def stack(extra_config: str = "", processes: int = 1, cluster: bool = False) -> Iterator[Stack]:
    """Start the ceiling server and kamigate (`processes` front-door processes, one worker, a
    redis-server, or with `cluster` a three-master Redis Cluster on loopback); stop them all
    afterwards. With processes > 1 the ceiling runs as many processes on its port too, so
    the comparison stays like for like."""
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="kg-bench-") as tmp:
        data = Path(tmp)
        nodes = Cluster(data / "cluster") if cluster else None
        if nodes is not None:
            nodes.start()
            redis, url = nodes.nodes[0], nodes.url
        else:
            redis = RedisProcess(data / "redis")
            redis.start()
            url = redis.url
        kg_port, hello_port = free_port(), free_port()
        cfg = str(_config(data, kg_port, url, extra_config, cluster=cluster))
        try:
            with _process([py, "-m", "engine", "worker", "--config", cfg], 0) as worker, \
                    _process([py, "-m", "engine", "serve", "--config", cfg,
                              "--processes", str(processes)], kg_port) as door, \
                    _process([py, "-m", "bench.hello_server", "--port", str(hello_port),
                              "--processes", str(processes)], hello_port) as hello:
                yield Stack(redis, kg_port, hello_port, door, worker, hello,
                            nodes.nodes[1:] if nodes else [])
        finally:
            if nodes is not None:
                nodes.stop()
            else:
                redis.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, of its children that ended (Redis' AOF rewrites:
    cutime, cstime) and of those alive (Linux /proc): it never goes back when a child ends."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


def wrk(port: int, seconds: int, connections: int, path: str = "/v1/orders") -> dict[str, Any]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-s", str(HERE / "post_order.lua"), f"http://127.0.0.1:{port}", "--", path],
        capture_output=True, text=True, check=True,
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


async def _import(port: int, n: int, codes: str = "", lot: str = "") -> None:
    """`n` codes into bench-sku (numbered, or `codes` as given: one a line)."""
    codes = codes or "\n".join(f"BENCH-{i:09d}" for i in range(n))
    url = f"http://127.0.0.1:{port}/admin/skus/bench-sku/stock?lot={lot or f'b{n}'}"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"}
    async with aiohttp.ClientSession() as s, s.post(url, data=codes, headers=headers) as r:
        assert r.status == 200, await r.text()


async def _fulfilled(port: int) -> int:
    url = f"http://127.0.0.1:{port}/admin/skus/bench-sku"
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
        return int((await r.json())["issued"])


async def batch_route(port: int, seconds: float, concurrency: int = 4) -> float:
    """Orders claimed end to end per second through POST /v1/orders/batch (1,000 per call)."""
    done = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as s:
        async def loop() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                body = {"orders": [order("bench-sku") for _ in range(1000)]}
                async with s.post(f"http://127.0.0.1:{port}/v1/orders/batch", json=body,
                                  headers={"Authorization": f"Bearer {STOREFRONT_KEY}"}) as r:
                    results = (await r.json())["results"]
                done += sum(1 for x in results if x.get("status") == "fulfilled")
        started = time.monotonic()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return done / (time.monotonic() - started)


def _measure(port: int, pids: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    """One wrk run, with the CPU each process spent per request."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    run = wrk(port, args.seconds, args.connections)
    run["cpu_us"] = {
        name: round((cpu_seconds(pid) - before[name]) * 1e6 / max(run["requests"], 1), 1)
        for name, pid in pids.items()
    }
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--processes", type=int, default=1,
                        help="front-door processes (and as many ceiling processes)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("bench.e2e needs wrk: apt-get install wrk", file=sys.stderr)
        return 2
    rows: dict[str, list[dict[str, Any]]] = {"ceiling": [], "kamigate": []}
    batch: list[float] = []
    env_note = "compiled" if not os.environ.get("KAMIGATE_NO_EXTENSIONS") else "pure"
    with stack(processes=args.processes) as s:
        asyncio.run(_import(s.kg_port, args.rounds * args.seconds * 20000 + 200_000))
        for r in range(args.rounds):
            # A B, then B A: neither side always runs first on a drifting machine.
            order = ("ceiling", "kamigate") if r % 2 == 0 else ("kamigate", "ceiling")
            for target in order:
                if target == "ceiling":
                    rows["ceiling"].append(_measure(s.hello_port, {"server": s.hello.pid}, args))
                else:
                    before = asyncio.run(_fulfilled(s.kg_port))
                    run = _measure(s.kg_port, s.pids, args)
                    time.sleep(0.3)
                    run["fulfilled"] = asyncio.run(_fulfilled(s.kg_port)) - before
                    rows["kamigate"].append(run)
            ceiling, run = rows["ceiling"][-1], rows["kamigate"][-1]
            print(f"round {r + 1}: ratio {run['rps'] / ceiling['rps']:.3f}; ceiling "
                  f"{ceiling['rps']:.0f}/s (CPU us/request {ceiling['cpu_us']}), "
                  f"kamigate {run['rps']:.0f}/s ({run['fulfilled']} fulfilled, "
                  f"{run['non2xx']} non-2xx; CPU us/order {run['cpu_us']})", flush=True)
        for call in range(3):
            before_cpu = {name: cpu_seconds(pid) for name, pid in s.pids.items()}
            before = asyncio.run(_fulfilled(s.kg_port))
            batch.append(asyncio.run(batch_route(s.kg_port, args.seconds)))
            done = max(asyncio.run(_fulfilled(s.kg_port)) - before, 1)
            cpu = {name: round((cpu_seconds(pid) - before_cpu[name]) * 1e6 / done, 1)
                   for name, pid in s.pids.items()}
            print(f"batch route {call + 1}: {batch[-1]:.0f} orders/s; CPU us/order {cpu}",
                  flush=True)
    ratios = [k["rps"] / c["rps"] for k, c in zip(rows["kamigate"], rows["ceiling"], strict=True)]
    med = statistics.median
    print()
    print(f"kernel: {env_note}; {args.processes} front-door process(es); "
          f"{args.rounds} rounds of {args.seconds}s, wrk -t1 "
          f"-c{args.connections}; medians (ratio range {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"{'target':<28}{'orders/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'ratio':>8}")
    c, k = rows["ceiling"], rows["kamigate"]
    print(f"{'hello-world POST (ceiling)':<28}{med(x['rps'] for x in c):>12.0f}"
          f"{med(x['p50_ms'] for x in c):>10.2f}{med(x['p99_ms'] for x in c):>10.2f}{1:>8.2f}")
    print(f"{'kamigate wait-mode order':<28}{med(x['rps'] for x in k):>12.0f}"
          f"{med(x['p50_ms'] for x in k):>10.2f}{med(x['p99_ms'] for x in k):>10.2f}"
          f"{med(ratios):>8.2f}")
    print(f"{'kamigate batch route':<28}{med(batch):>12.0f}{'':>10}{'':>10}{'':>8}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "ratios": ratios, "batch": batch}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
