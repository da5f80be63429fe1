"""The promises when the network between the engine and Redis misbehaves (tests/tcp_proxy.py):
latency, a black hole, a reply lost after the command committed, and a Redis whose disk fills.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from engine import config
from engine.stock import lots
from engine.store import connection, records, scripts
from engine.store.embedded import RedisProcess, free_port
from tests.conftest import SHOP_A_KEY, VIEWER_KEY, Engine, auth, codes, post_many, settings_dict
from tests.promises import assert_promises
from tests.tcp_proxy import TcpProxy

SHARDS = 2


@pytest.fixture
async def proxy(redis_server: RedisProcess, redis: Redis) -> AsyncIterator[TcpProxy]:
    """A proxy in front of the session's (flushed) Redis."""
    front = await TcpProxy("127.0.0.1", redis_server.port).start()
    yield front
    await front.close()


async def start_engine(door_url: str, worker_url: str | None, **sections: Any) -> Engine:
    """A front door on door_url and (unless None) a worker on worker_url."""
    raw = settings_dict(redis={"url": door_url, "shards": SHARDS}, **sections)
    engine = Engine(config.from_mapping(raw, environ={}), door_url)
    await engine.start(worker=False)
    if worker_url is not None:
        engine.url = worker_url  # Engine.start_worker connects to engine.url
        await engine.start_worker()
    return engine


async def order(engine: Engine, buyer: str, key: str | None = None, qty: int = 1,
                wait_ms: int = 2000) -> tuple[int, dict[str, Any], float]:
    headers = auth(SHOP_A_KEY)
    if key is not None:
        headers["Idempotency-Key"] = key
    started = time.monotonic()
    resp = await engine.http.post("/v1/orders", headers=headers, json={
        "sku": "card-100", "qty": qty, "buyer": buyer, "wait_ms": wait_ms})
    body: dict[str, Any] = await resp.json(content_type=None)
    if resp.status >= 400:
        assert resp.content_type == "application/problem+json", body
    return resp.status, body, time.monotonic() - started


async def settled(redis: Redis, order_ids: list[str], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        left = [oid for oid in order_ids
                if (r := await records.read(redis, oid)) is None or r.status == "pending"]
        if not left:
            return
        assert time.monotonic() < deadline, f"still pending: {left}"
        await asyncio.sleep(0.05)


async def all_records(redis: Redis) -> list[records.OrderRecord]:
    found = []
    for name in await redis.keys("kg:{s*}:o:*"):
        record = records.parse(await redis.hgetall(name))
        if record is not None:
            found.append(record)
    return found


async def assert_codes_accounted(redis: Redis, order_ids: list[str]) -> None:
    """Every code the SKU counts as issued is held by one of these orders (none issued to an
    order record that no longer shows it)."""
    [level] = await lots.levels(redis, SHARDS, ["card-100"])
    held = []
    for oid in order_ids:
        record = await records.read(redis, oid)
        if record is not None and record.status in ("fulfilled", "held"):
            held += record.codes
    assert level.issued + level.held == len(held), (level, len(held))


# -- (a) latency ---------------------------------------------------------------------------------
async def test_latency_20ms_orders_still_fulfilled(proxy: TcpProxy, redis: Redis) -> None:
    proxy.latency = 0.02
    engine = await start_engine(proxy.url, proxy.url)
    try:
        imported = codes("LAT", 60)
        await engine.import_codes("card-100", imported)
        base = str(engine.http.make_url("")).rstrip("/")
        answers = await post_many(base, [{"sku": "card-100", "qty": 1, "buyer": f"l{i}"}
                                         for i in range(40)])
        assert all(s < 500 for s, _ in answers), answers
        assert [s for s, _ in answers] == [201] * 40, [s for s, _ in answers]
        admitted = [b["order_id"] for _, b in answers]
        await settled(redis, admitted)
        result = await assert_promises(redis, SHARDS, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 40}
    finally:
        await engine.close()


# -- (b) black hole ------------------------------------------------------------------------------
TIMEOUT_S = 0.3
# README: "Redis commands from the front door time out after timeout_s". An order makes at
# most two round trips (key reservation, admission): no request may hang longer than that.
HANG_BOUND_S = 2 * TIMEOUT_S + 0.3


@pytest.mark.parametrize("worker_via", ["direct", "proxy"])
async def test_black_hole_opens_the_breaker_and_recovers(
    proxy: TcpProxy, redis: Redis, redis_server: RedisProcess, worker_via: str
) -> None:
    """Redis stops answering (~2 s): the door answers 503 `unavailable` within a bound, at
    once while the breaker is open, and takes orders again by itself afterwards."""
    worker_url = redis_server.url if worker_via == "direct" else proxy.url
    engine = await start_engine(proxy.url, worker_url, breaker={
        "failures": 3, "open_s": 0.5, "timeout_s": TIMEOUT_S})
    try:
        imported = codes("HOLE", 50)
        await engine.import_codes("card-100", imported)
        status, body, _ = await order(engine, "before")
        assert status == 201, body
        admitted = [body["order_id"]]
        proxy.blackhole = True
        hole_started = time.monotonic()
        first = await asyncio.gather(*(order(engine, f"down-{i}", wait_ms=0) for i in range(6)))
        assert [s for s, _, _ in first] == [503] * 6, first
        assert all(b["code"] == "unavailable" for _, b, _ in first)
        slowest = max(took for _, _, took in first)
        quick = []
        while time.monotonic() - hole_started < 2.0:
            quick.append(await order(engine, f"open-{len(quick)}", wait_ms=0))
            await asyncio.sleep(0.05)
        assert all(s == 503 for s, _, _ in quick), [s for s, _, _ in quick]
        proxy.blackhole = False
        deadline = time.monotonic() + 5
        while True:
            status, body, _ = await order(engine, f"after-{time.monotonic()}")
            if status in (201, 202):
                admitted.append(body["order_id"])
                break
            assert status == 503, body
            assert time.monotonic() < deadline, "the door did not recover"
            await asyncio.sleep(0.1)
        steady = [await order(engine, f"steady-{i}") for i in range(5)]
        assert [s for s, _, _ in steady] == [201] * 5, steady
        admitted += [b["order_id"] for _, b, _ in steady]
        await settled(redis, admitted)
        await assert_promises(redis, SHARDS, ["card-100"], admitted, set(imported))
        assert slowest < HANG_BOUND_S, (
            f"a request hung {slowest:.2f} s with breaker.timeout_s = {TIMEOUT_S}")
        # Open: answered at once, but for the probe let through every open_s, which waits
        # out one timeout.
        took = sorted(t for _, _, t in quick)
        assert took[-1] < HANG_BOUND_S, took
        assert took[len(took) * 3 // 4] < 0.05, took
    finally:
        proxy.blackhole = False
        await engine.close()


# -- (c) the reply of a committed call is lost ---------------------------------------------------
@pytest.mark.parametrize("script", ["admit", "idempotency"])
async def test_lost_reply_after_commit_then_retry_with_the_same_key(
    proxy: TcpProxy, redis: Redis, script: str
) -> None:
    """The door's admission (or its key reservation) committed in Redis, but the answer never
    came back: the client hears 503; its retry with the same key gets the same order."""
    engine = await start_engine(proxy.url, proxy.url)
    try:
        imported = codes("LOST", 40)
        await engine.import_codes("card-100", imported)
        status, warm, _ = await order(engine, "warm", key="warm-1")  # scripts now cached
        assert status == 201, warm
        admitted = [warm["order_id"]]
        sha = (scripts.ADMIT if script == "admit" else scripts.IDEMPOTENCY).sha
        proxy.drop_reply(sha.encode(), times=1000)  # every such call, until undone
        status, lost, _ = await order(engine, "lost", key="lost-1", qty=2)
        proxy.drop_reply(b"", times=0)
        assert proxy.dropped >= 1, f"the {script} call never reached Redis"
        first_answer = (status, lost)
        # the retry: the same key and body
        deadline = time.monotonic() + 10
        while True:
            status, again, _ = await order(engine, "lost", key="lost-1", qty=2)
            if again.get("status") == "fulfilled":
                break
            assert status in (200, 201, 202), again
            assert time.monotonic() < deadline, again
            await asyncio.sleep(0.1)
        order_id = again["order_id"]
        admitted.append(order_id)
        status, replay, _ = await order(engine, "lost", key="lost-1", qty=2)
        assert status == 200 and replay["order_id"] == order_id
        assert replay["codes"] == again["codes"] and len(again["codes"]) == 2
        await settled(redis, admitted)
        await asyncio.sleep(0.3)  # let any late duplicate of the admit be claimed too
        record = await records.read(redis, order_id)
        assert record is not None and record.codes == again["codes"], (record, again)
        buyers = [r.request.buyer for r in await all_records(redis)]
        assert buyers.count("lost") == 1, "the retry created a second order"
        await assert_promises(redis, SHARDS, ["card-100"], admitted, set(imported))
        await assert_codes_accounted(redis, admitted)
        assert first_answer[0] == 503, first_answer
        assert first_answer[1]["code"] == "unavailable"
    finally:
        await engine.close()


async def test_lost_reply_of_the_claim_issues_codes_once(proxy: TcpProxy, redis: Redis,
                                                         redis_server: RedisProcess) -> None:
    """The worker's claim committed but its answer was lost: the worker reconnects and runs
    the entries again; the claim, keyed by order id, issues nothing twice."""
    engine = await start_engine(redis_server.url, proxy.url)
    try:
        imported = codes("CLAIM", 60)
        await engine.import_codes("card-100", imported)
        status, warm, _ = await order(engine, "warm")
        assert status == 201, warm
        proxy.drop_reply(scripts.CLAIM.sha.encode(), times=3)
        base = str(engine.http.make_url("")).rstrip("/")
        answers = await post_many(base, [{"sku": "card-100", "qty": 1 + i % 2, "buyer": f"c{i}"}
                                         for i in range(30)])
        assert all(s in (201, 202) for s, _ in answers), answers
        admitted = [warm["order_id"]] + [b["order_id"] for _, b in answers]
        await settled(redis, admitted, timeout=20)
        assert proxy.dropped >= 1, "no claim reply was dropped"
        result = await assert_promises(redis, SHARDS, ["card-100"], admitted, set(imported))
        assert result["statuses"] == {"fulfilled": 31}, result["statuses"]
        await assert_codes_accounted(redis, admitted)
        for status, body in answers:  # what the client was told is what the record says
            record = await records.read(redis, body["order_id"])
            assert record is not None
            if status == 201:
                assert record.codes == body["codes"], (body, record)
    finally:
        await engine.close()


async def test_connections_reset_mid_load(proxy: TcpProxy, redis: Redis) -> None:
    """Every connection (door and worker) is reset again and again under load: answers are
    orders or 503s, never another 5xx; every order the client heard of is decided once.
    (The breaker is off: it would, rightly, turn the whole run into quick 503s.)"""
    engine = await start_engine(proxy.url, proxy.url, breaker={"enabled": False})
    try:
        imported = codes("RST", 300)
        await engine.import_codes("card-100", imported)
        base = str(engine.http.make_url("")).rstrip("/")
        stop = asyncio.Event()

        async def resetter() -> int:
            resets = 0
            while not stop.is_set():
                await asyncio.sleep(0.02)
                proxy.reset_all()
                proxy.reset = True  # and reconnections are refused for a moment
                await asyncio.sleep(0.005)
                proxy.reset = False
                resets += 1
            return resets

        task = asyncio.create_task(resetter())
        answers = []
        for round_ in range(8):
            answers += await post_many(base, [
                {"sku": "card-100", "qty": 1, "buyer": f"r{round_}-{i}", "wait_ms": 500}
                for i in range(40)])
        stop.set()
        assert await task >= 5
        seen = {s: sum(1 for a, _ in answers if a == s) for s, _ in answers}
        assert set(seen) <= {201, 202, 503}, seen
        assert all(b["code"] == "unavailable" for s, b in answers if s == 503)
        admitted = [b["order_id"] for s, b in answers if s in (201, 202)]
        assert len(admitted) >= 20, f"only {len(admitted)} of 320 orders got through"
        await settled(redis, admitted, timeout=20)
        await assert_promises(redis, SHARDS, ["card-100"], admitted, set(imported))
        for status, body in answers:
            if status == 201:
                record = await records.read(redis, body["order_id"])
                assert record is not None and record.codes == body["codes"]
    finally:
        await engine.close()


# -- (d) Redis's disk fills ----------------------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("no mount command: cannot make a small disk for Redis")
    done = subprocess.run([mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int) -> Path:
    """A file that takes all but `leave` bytes of the file system."""
    free = shutil.disk_usage(path).free
    filler = path / "filler"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


async def test_full_disk_never_loses_an_acknowledged_order(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        server = RedisProcess(disk / "redis", port=free_port(), appendfsync="always")
        server.start()
        engine = await start_engine(server.url, server.url, breaker={
            "failures": 3, "open_s": 0.3, "timeout_s": 0.5})
        acknowledged: list[str] = []
        statuses: dict[int, int] = {}
        try:
            imported = codes("DISK", 400)
            await engine.import_codes("card-100", imported)
            filler = fill(disk, leave=24 * 1024)
            for i in range(60):
                status, body, took = await order(engine, f"d{i}", wait_ms=300)
                statuses[status] = statuses.get(status, 0) + 1
                assert status in (201, 202, 409, 429, 503), body
                assert took < 5, f"order {i} hung {took:.1f} s"
                if status in (201, 202):
                    acknowledged.append(body["order_id"])
            assert statuses.get(503, 0) > 0, f"the disk never filled: {statuses}"
        finally:
            await engine.close()
            server.kill()
        filler.unlink()
        server.start()  # the same AOF, with room again
        check = connection.client(server.url)
        engine = await start_engine(server.url, server.url)
        try:
            for oid in acknowledged:
                assert await records.read(check, oid) is not None, f"acknowledged {oid} lost"
            await settled(check, acknowledged)
            await assert_promises(check, SHARDS, ["card-100"], acknowledged, set(imported))
            level = await (await engine.http.get("/admin/skus/card-100",
                                                 headers=auth(VIEWER_KEY))).json()
            assert level["imported"] == len(imported)
        finally:
            await engine.close()
            await check.aclose()
            server.stop()

