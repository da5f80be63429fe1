"""Soak: steady orders for a given time while faults are injected at random — worker SIGKILLs,
Redis SIGKILLed and restarted, Redis paused, config reloads — then check the promises.

It starts its own kamigate (one front door, two workers, a redis-server with AOF `always`, so
a Redis SIGKILL loses no acknowledged write) on loopback, and ends by checking C1–C3
(reconcile), C4 (every admitted order decided), no code issued twice or never imported, C5
(a sample of orders replayed with their Idempotency-Key answer the same codes), and that
memory and unacknowledged stream entries stay flat. Exit code 0 only when all of that holds.

Usage:  python -m loadtests.soak --minutes 10 [--rate 150] [--fault-every 20] [--json F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.e2e import ADMIN_KEY, STOREFRONT_KEY, _config, _wait_port
from engine.cli.support import stop_processes
from engine.stock.reconcile import reconcile
from engine.store import connection, keys, records
from engine.store.embedded import RedisProcess, free_port
from loadtests.payloads import order

SKU = "bench-sku"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Soak:
    def __init__(self, args: argparse.Namespace, data: Path) -> None:
        self.args, self.data = args, data
        self.redis = RedisProcess(data / "redis", port=free_port(), appendfsync="always")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cfg = data / "bench.toml"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.door: subprocess.Popen[bytes] | None = None
        self.admitted: dict[str, tuple[str, dict[str, Any]]] = {}  # order id -> key, body
        self.answers: dict[int, int] = {}
        self.faults: dict[str, int] = {}
        self.samples: list[dict[str, float]] = []
        self.imported = 0
        self.gave_up = 0
        self.rng = random.Random(args.seed)

    def _spawn(self, *argv: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "engine", *argv, "--config",
                                 str(self.cfg)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def start(self) -> None:
        self.redis.start()
        _config(self.data, self.port, self.redis.url, "\n[breaker]\ntimeout_s = 0.5\n")
        self.workers = [self._spawn("worker") for _ in range(2)]
        self.door = self._spawn("serve", "--processes", "1")
        _wait_port(self.port)

    def stop(self) -> None:
        stop_processes(*(p for p in [self.door, *self.workers] if p is not None))
        self.redis.stop()

    async def _post(self, session: aiohttp.ClientSession, path: str, key: str,
                    **kw: Any) -> tuple[int, Any]:
        async with session.post(self.base + path, headers={
                "Authorization": f"Bearer {key}", **kw.pop("headers", {})}, **kw) as resp:
            return resp.status, await resp.read()

    async def stock(self, session: aiohttp.ClientSession, n: int) -> None:
        lot = f"soak-{self.imported}"
        body = "\n".join(f"SOAK-{lot}-{i}" for i in range(n))
        status, _ = await self._post(session, f"/admin/skus/{SKU}/stock?lot={lot}", ADMIN_KEY,
                                     data=body, headers={"Content-Type": "text/plain"})
        if status == 200:
            self.imported += n

    async def buyer(self, session: aiohttp.ClientSession, stop_at: float) -> None:
        """One order at a time; a failed attempt is retried with the same key and body."""
        while time.monotonic() < stop_at:
            body = {**order(SKU), "wait_ms": 0}
            key = f"soak-{body['buyer']}"
            for attempt in range(50):
                try:
                    status, raw = await self._post(session, "/v1/orders", STOREFRONT_KEY,
                                                   json=body, headers={"Idempotency-Key": key})
                except (aiohttp.ClientError, TimeoutError):
                    status, raw = 599, b""
                self.answers[status] = self.answers.get(status, 0) + 1
                if status in (200, 201, 202):
                    self.admitted[json.loads(raw)["order_id"]] = (key, body)
                    break
                if status < 500 and status != 429:
                    break
                if attempt == 49:
                    self.gave_up += 1
                await asyncio.sleep(0.2)
            await asyncio.sleep(self.args.buyers / self.args.rate)

    async def faulty(self, session: aiohttp.ClientSession, stop_at: float) -> None:
        kinds = ["worker_kill", "redis_kill", "redis_pause", "config_reload"]
        while time.monotonic() + self.args.fault_every < stop_at:
            await asyncio.sleep(self.args.fault_every * self.rng.uniform(0.5, 1.5))
            kind = self.rng.choice(kinds)
            self.faults[kind] = self.faults.get(kind, 0) + 1
            if kind == "worker_kill":
                i = self.rng.randrange(len(self.workers))
                self.workers[i].kill()
                self.workers[i].wait()
                await asyncio.sleep(1)
                self.workers[i] = self._spawn("worker")
            elif kind == "redis_kill":
                self.redis.kill()
                await asyncio.sleep(0.5)
                self.redis.start()
            elif kind == "redis_pause":
                assert self.redis.process is not None
                self.redis.process.send_signal(signal.SIGSTOP)
                await asyncio.sleep(1.5)
                self.redis.process.send_signal(signal.SIGCONT)
            else:
                text = self.cfg.read_text()
                bump = f"\n# reload {self.faults[kind]}\n"
                self.cfg.write_text(text + bump)
                assert self.door is not None
                self.door.send_signal(signal.SIGHUP)

    async def sampler(self, stop_at: float) -> None:
        client = connection.client(self.redis.url, timeout=2)
        try:
            while time.monotonic() < stop_at:
                await asyncio.sleep(10)
                sample = {"t": time.monotonic()}
                if self.door is not None:
                    sample["door_mb"] = rss_mb(self.door.pid)
                sample["worker_mb"] = max(rss_mb(w.pid) for w in self.workers if w.poll() is None)
                try:
                    pending = 0
                    for shard in range(4):
                        info: Any = await client.xpending(keys.stream(shard), keys.GROUP)
                        pending += int(info["pending"])
                    sample["pending"] = pending
                    sample["redis_mb"] = int((await client.info("memory"))["used_memory"]) / 2**20
                except Exception:  # Redis may be down at this moment: skip the sample
                    pass
                self.samples.append(sample)
        finally:
            await client.aclose()

    async def run(self) -> dict[str, Any]:
        stop_at = time.monotonic() + self.args.minutes * 60
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await self.stock(session, self.args.codes)
            await asyncio.gather(
                *(self.buyer(session, stop_at) for _ in range(self.args.buyers)),
                self.faulty(session, stop_at), self.sampler(stop_at))
            return await self.verify(session)

    async def verify(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        client = connection.client(self.redis.url, timeout=5)
        try:
            deadline = time.monotonic() + 120
            pending = list(self.admitted)
            while pending and time.monotonic() < deadline:
                found = [await records.read(client, oid) for oid in pending]
                pending = [oid for oid, r in zip(pending, found, strict=True)
                           if r is None or r.status == "pending"]
                await asyncio.sleep(1)
            report = await reconcile(client, 4, [SKU])
            unacked = 0
            for shard in range(4):
                info: Any = await client.xpending(keys.stream(shard), keys.GROUP)
                unacked += int(info["pending"])
            issued: list[str] = []
            statuses: dict[str, int] = {}
            lost = 0
            for oid in self.admitted:
                record = await records.read(client, oid)
                if record is None:
                    lost += 1
                    continue
                statuses[record.status] = statuses.get(record.status, 0) + 1
                issued += record.codes
            replays = self.rng.sample(sorted(self.admitted), min(200, len(self.admitted)))
            c5 = 0
            for oid in replays:
                key, body = self.admitted[oid]
                status, raw = await self._post(session, "/v1/orders", STOREFRONT_KEY, json=body,
                                               headers={"Idempotency-Key": key})
                record = await records.read(client, oid)
                answer = json.loads(raw)
                if status != 200 or answer.get("order_id") != oid or (
                        record is not None and answer.get("codes") != (record.codes or None)):
                    c5 += 1
        finally:
            await client.aclose()
        warm = [s for s in self.samples if "pending" in s][2:] or self.samples
        growth = {name: round(warm[-1][name] / max(warm[0][name], 1e-9), 2)
                  for name in ("door_mb", "worker_mb") if warm and name in warm[0]}
        return {
            "minutes": self.args.minutes, "orders_admitted": len(self.admitted),
            "answers": self.answers, "faults": self.faults, "statuses": statuses,
            "codes_imported": self.imported, "codes_issued": len(issued),
            "violations": {
                "reconcile (C1-C3)": len(report.violations),
                "lost or undecided (C4)": lost + len(pending),
                "code issued twice": len(issued) - len(set(issued)),
                "replay differs (C5)": c5,
                "gave up after 50 tries": self.gave_up,
                "stream entries unacknowledged at the end": unacked,
            },
            "memory_growth": growth,
            "pending_at_end": warm[-1].get("pending") if warm else None,
            "samples": self.samples,
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=150, help="orders offered per second")
    parser.add_argument("--buyers", type=int, default=20, help="concurrent buyers")
    parser.add_argument("--codes", type=int, default=200_000)
    parser.add_argument("--fault-every", type=float, default=20, help="seconds, on average")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", help="write the full result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kg-soak-") as tmp:
        soak = Soak(args, Path(tmp))
        soak.start()
        try:
            result = asyncio.run(soak.run())
        finally:
            soak.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    flat = all(v <= 1.5 for v in result["memory_growth"].values())
    ok = not any(result["violations"].values()) and flat
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print("soak:", "OK" if ok else "FAILED", f"(memory flat: {flat})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
