"""Order claims per second: kamigate's worker beside a Celery task and an arq job.

The same job for all three (pop one code for one order from Redis, record the outcome), the
same input (N codes of one SKU, N orders enqueued before the worker starts), the same machine,
a fresh redis-server (AOF everysec, TCP loopback) per run. Only the worker side is timed: from
spawning the worker process until all N orders are recorded (enqueueing is not timed). Each
contender runs `--runs` times; the table shows medians.

Usage:  python -m bench.peers [--orders 20000] [--runs 3]
Needs:  celery and arq (pip install celery arq).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from celery import Celery
from redis.asyncio import Redis

from engine import config
from engine.cli.support import stop_processes
from engine.clock import now_ms
from engine.door.ingest import Ingest
from engine.stock.importer import Importer
from engine.store import keys
from engine.store.embedded import RedisProcess, free_port
from engine.wire import StreamOrder

from . import job
from .celery_app import QUEUE

SKU = "bench-sku"
BIN = Path(sys.executable).parent
POLL_S = 0.005
TIMEOUT_S = 600.0


@dataclass
class Run:
    seconds: float  # worker spawn -> all N recorded
    steady: float  # orders/s after the first were seen recorded (startup excluded)
    ok: bool  # every code handed out exactly once, nothing left


@contextmanager
def fresh_redis() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="kg-peers-") as tmp:
        server = RedisProcess(Path(tmp), port=free_port())
        server.start()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def spawn(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        stop_processes(proc)


async def wait_done(count: Callable[[], Awaitable[int]], n: int, start: float,
                    proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    first, first_done = 0.0, 0
    while True:
        done = await count()
        now = time.perf_counter()
        if done and not first:
            first, first_done = now, done
        if done >= n:
            rest = n - first_done
            return now - start, rest / (now - first) if rest else 0.0
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited ({proc.returncode}) after {done}/{n} orders")
        if now - start > TIMEOUT_S:
            raise RuntimeError(f"timed out after {done}/{n} orders")
        await asyncio.sleep(POLL_S)


def _codes(n: int) -> list[str]:
    return [f"CODE-{i:08d}" for i in range(n)]


# -- the peers ---------------------------------------------------------------------------------
async def load_codes(redis: Redis, n: int) -> None:
    codes = _codes(n)
    for i in range(0, n, 1000):
        await redis.rpush(job.codes_key(SKU), *codes[i:i + 1000])


async def check_peer(redis: Redis, n: int) -> bool:
    left = await redis.llen(job.codes_key(SKU))
    sample = [await redis.hget(job.order_key(f"o{i}"), "status") for i in (0, n // 2, n - 1)]
    return left == 0 and all(s == b"fulfilled" for s in sample)


def run_celery(n: int, prefetch: int) -> Run:
    with fresh_redis() as server:
        env = {job.URL_ENV: server.url, "PEERS_CELERY_PREFETCH": str(prefetch)}

        async def load() -> None:
            redis = Redis.from_url(server.url)
            await load_codes(redis, n)
            await redis.aclose()

        asyncio.run(load())
        # A producer-side app of its own (the worker's app reads the URL from the env).
        sender = Celery("peers-sender", broker=server.url)
        with sender.producer_or_acquire() as producer:
            for i in range(n):
                sender.send_task("claim", (f"o{i}", SKU), queue=QUEUE, ignore_result=True,
                                 producer=producer)
        sender.close()
        args = [str(BIN / "celery"), "-A", "bench.peers.celery_app", "worker", "--pool=solo",
                "--concurrency=1", "-Q", QUEUE, "--without-gossip", "--without-mingle",
                "--without-heartbeat", f"--prefetch-multiplier={prefetch}",
                "--loglevel=WARNING"]
        return asyncio.run(_timed(server.url, args, env, n, _peer_count, check_peer))


def run_arq(n: int, max_jobs: int, poll_delay: float) -> Run:
    with fresh_redis() as server:
        env = {job.URL_ENV: server.url, "PEERS_ARQ_MAX_JOBS": str(max_jobs),
               "PEERS_ARQ_POLL_DELAY": str(poll_delay)}

        async def load() -> None:
            from arq import create_pool
            from arq.connections import RedisSettings

            redis = Redis.from_url(server.url)
            await load_codes(redis, n)
            await redis.aclose()
            pool = await create_pool(RedisSettings(host="127.0.0.1", port=server.port))
            for i in range(0, n, 500):
                await asyncio.gather(*(pool.enqueue_job("claim", f"o{j}", SKU)
                                       for j in range(i, min(n, i + 500))))
            await pool.aclose()

        asyncio.run(load())
        args = [str(BIN / "arq"), "bench.peers.arq_worker.WorkerSettings"]
        return asyncio.run(_timed(server.url, args, env, n, _peer_count, check_peer))


def _peer_count(redis: Redis) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return int(await redis.get(job.DONE_KEY) or 0)
    return count


# -- kamigate ----------------------------------------------------------------------------------
def kamigate_config(path: Path, redis_url: str) -> Path:
    path.write_text(f"""
[redis]
url = "{redis_url}"
shards = 1
[[storefronts]]
id = "bench"
key_sha256 = "{config.sha256_hex("bench-shop-key")}"
[[admins]]
id = "bench-ops"
role = "admin"
key_sha256 = "{config.sha256_hex("bench-admin-key")}"
[[skus]]
id = "{SKU}"
max_qty = 10
""")
    return path


async def load_kamigate(url: str, n: int) -> None:
    redis = Redis.from_url(url)
    importer = Importer(redis, 1, SKU, "lot1", 0)
    await importer.feed(_codes(n))
    await importer.finish()
    ingest = Ingest(redis, 1)
    shard = keys.shard_of_sku(SKU, 1)
    for i in range(0, n, 2000):
        now = now_ms()
        futures = [ingest.admit(StreamOrder(keys.new_order_id(shard), "bench", SKU, 1, f"b{j}",
                                            0, now), shard)
                   for j in range(i, min(n, i + 2000))]
        results = await asyncio.gather(*futures)
        assert all(r.status == "pending" for r in results), results[0]
    await ingest.close()
    await redis.aclose()


def _kg_count(redis: Redis) -> Callable[[], Awaitable[int]]:
    async def count() -> int:
        return int(await redis.hget(keys.stats(0), "claim_orders") or 0)
    return count


async def check_kamigate(redis: Redis, n: int) -> bool:
    counts = await redis.hgetall(keys.sku_counts(SKU, 0))
    return int(counts.get(b"available", -1)) == 0 and int(counts.get(b"issued", 0)) == n


def run_kamigate(n: int) -> Run:
    with fresh_redis() as server:
        asyncio.run(load_kamigate(server.url, n))
        cfg = kamigate_config(server.data_dir / "bench.toml", server.url)
        args = [sys.executable, "-m", "engine", "worker", "--config", str(cfg)]
        return asyncio.run(_timed(server.url, args, {}, n, _kg_count, check_kamigate))


async def _timed(url: str, args: list[str], env: dict[str, str], n: int,
                 counter: Callable[[Redis], Callable[[], Awaitable[int]]],
                 check: Callable[[Redis, int], Awaitable[bool]]) -> Run:
    redis = Redis.from_url(url)
    try:
        start = time.perf_counter()
        with spawn(args, env) as proc:
            seconds, steady = await wait_done(counter(redis), n, start, proc)
        return Run(seconds, steady, await check(redis, n))
    finally:
        await redis.aclose()


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--celery-prefetch", type=int, default=64)
    parser.add_argument("--arq-max-jobs", type=int, default=1000)
    parser.add_argument("--arq-poll-delay", type=float, default=0.01)
    parser.add_argument("--only", choices=["kamigate", "celery", "arq"], action="append")
    opts = parser.parse_args()
    n = opts.orders
    contenders: dict[str, Callable[[], Run]] = {
        "kamigate worker": lambda: run_kamigate(n),
        f"celery (solo, prefetch {opts.celery_prefetch})":
            lambda: run_celery(n, opts.celery_prefetch),
        f"arq (max_jobs {opts.arq_max_jobs}, poll {opts.arq_poll_delay}s)":
            lambda: run_arq(n, opts.arq_max_jobs, opts.arq_poll_delay),
    }
    if opts.only:
        contenders = {k: v for k, v in contenders.items()
                      if any(k.startswith(o) for o in opts.only)}
    runs: dict[str, list[Run]] = {name: [] for name in contenders}
    for r in range(opts.runs):  # round robin: drift on a shared machine hits all alike
        for name, fn in contenders.items():
            got = fn()
            runs[name].append(got)
            print(f"  run {r + 1} {name}: {got.seconds:.3f}s (steady {got.steady:.0f}/s)"
                  f"{'' if got.ok else '  CHECK FAILED'}", file=sys.stderr, flush=True)
    medians = {name: (statistics.median(x.seconds for x in rs),
                      statistics.median(x.steady for x in rs)) for name, rs in runs.items()}
    kg = medians.get("kamigate worker")
    print(f"\n{n} orders, median of {opts.runs} runs; seconds = worker spawn -> all recorded;"
          " steady/s = orders/s after the first were seen recorded (startup excluded)")
    print(f"{'contender':<34} {'orders':>7} {'seconds':>8} {'orders/s':>9} {'x kg':>6}"
          f" {'steady/s':>9} {'x kg':>6}  ok")
    for name, (secs, steady) in medians.items():
        ratio = f"{secs / kg[0]:.1f}" if kg else "-"
        ratio_s = f"{kg[1] / steady:.1f}" if kg and steady else "-"
        ok = all(x.ok for x in runs[name])
        print(f"{name:<34} {n:>7} {secs:>8.3f} {n / secs:>9.0f} {ratio:>6}"
              f" {steady:>9.0f} {ratio_s:>6}  {'yes' if ok else 'NO'}")
    print("x kg = kamigate's orders/s / the contender's orders/s")


if __name__ == "__main__":
    main()
