"""`[redis] wait_replicas`: nothing kamigate wrote is shown before a replica holds it. A real
master and replica on loopback; the replica is stopped (SIGSTOP) to make it lag."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from engine import config
from engine.config.loading import ConfigError
from engine.store.embedded import RedisProcess, free_port
from tests.conftest import (
    SHOP_A_KEY,
    Engine,
    auth,
    codes,
    eventually,
    settings_dict,
    write_config,
)
from tests.event_receiver import SECRET, EventReceiver, serving


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RedisProcess, RedisProcess]]:
    master = RedisProcess(tmp_path / "master", port=free_port())
    master.start()
    replica = RedisProcess(tmp_path / "replica", port=free_port(),
                           extra=["--replicaof", "127.0.0.1", str(master.port)])
    replica.start()
    deadline = time.monotonic() + 10
    with redis_sync.Redis(port=replica.port) as client:
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.05)
    yield master, replica
    _resume(replica)
    replica.stop()
    master.stop()


def _pid(node: RedisProcess) -> int:
    assert node.process is not None
    return node.process.pid


@contextlib.contextmanager
def _stopped(node: RedisProcess) -> Iterator[None]:
    """The replica frozen: it holds its link but acknowledges nothing."""
    os.kill(_pid(node), signal.SIGSTOP)
    try:
        yield
    finally:
        _resume(node)


def _resume(node: RedisProcess) -> None:
    if node.process is not None and node.process.poll() is None:
        os.kill(_pid(node), signal.SIGCONT)


@contextlib.asynccontextmanager
async def _engine(master: RedisProcess, replicas: int, lease_s: float = 1.0
                  ) -> AsyncIterator[Engine]:
    raw = settings_dict(redis={"url": master.url, "shards": 2, "wait_replicas": replicas,
                               "wait_timeout_ms": 100},
                        worker={"block_ms": 20, "lease_s": lease_s},
                        webhooks={"first_retry_s": 0.05, "max_retry_s": 0.2,
                                  "allow_private": True})
    raw["storefronts"][0]["webhook_secret"] = SECRET
    engine = Engine(config.from_mapping(raw, environ={}), master.url)
    try:
        yield await engine.start()
    finally:
        await engine.close()


async def _get(engine: Engine, order_id: str) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.get(f"/v1/orders/{order_id}", headers=auth(SHOP_A_KEY))
    return resp.status, await resp.json()


async def test_an_answer_with_codes_is_on_the_replica_already(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    master, replica = pair
    async with _engine(master, 1) as engine:
        await engine.import_codes("card-100", codes("R", 20))
        with redis_sync.Redis(port=replica.port) as on_replica:
            for i in range(20):
                status, body = await engine.order(buyer=f"b{i}")
                assert status == 201, body
                # read at once from the replica: the answer waited for it
                found = on_replica.keys(f"*:o:{body['order_id']}")
                assert len(found) == 1 and on_replica.hget(found[0], "st") == b"fulfilled"


@pytest.mark.parametrize("replicas", [0, 1])
async def test_a_lagging_replica_gets_a_503_not_an_unreplicated_answer(
        pair: tuple[RedisProcess, RedisProcess], replicas: int) -> None:
    """With wait_replicas the order placed while the replica lags is answered 503 (retry
    with the same key finds it, once); without, it is answered as usual (the control)."""
    master, replica = pair
    async with _engine(master, replicas) as engine:
        await engine.import_codes("card-100", codes("L", 5))
        with _stopped(replica):
            status, body = await engine.order(idempotency_key="k-1")
        if replicas == 0:
            assert status == 201, body
            return
        assert status == 503 and body["code"] == "unavailable", body
        assert "replicas have not acknowledged" in body["detail"], body
        status, again = await engine.order(idempotency_key="k-1")
        assert status in (201, 202), again
        deadline = time.monotonic() + 10
        while (found := await _get(engine, again["order_id"]))[1]["status"] != "fulfilled":
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        assert len(found[1]["codes"]) == 1, found
        level = await (await engine.http.get(
            "/admin/skus", headers=auth("key-operator"))).json()
        [sku] = [s for s in level["skus"] if s["sku"] == "card-100"]
        assert sku["available"] == 4, sku  # one order, whatever the retries


async def test_codes_are_shown_only_once_the_replica_holds_them(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    """A ticket served while the replica lags: the claim happened on the master, yet its
    codes are shown neither in a reply nor on a read until the replica has them."""
    master, replica = pair
    # A lease renewal the replica does not acknowledge makes the worker let its shards go
    # (it serves nothing until the replica is back): renewals far apart leave it serving
    # while the replica is stopped, long enough to claim the ticket.
    async with _engine(master, 1, lease_s=60) as engine:
        status, ticket = await engine.order()
        assert status == 202 and ticket["status"] == "queued", ticket  # sold out
        with _stopped(replica):
            resp = await engine.http.post(
                "/admin/skus/card-100/stock", data="ONLY-CODE", params={"lot": "lot1"},
                headers={**auth("key-operator"), "Content-Type": "text/plain"})
            assert resp.status == 503, await resp.text()  # imported, not yet replicated
            deadline = time.monotonic() + 10
            while (found := await _get(engine, ticket["order_id"]))[0] != 503:
                assert found[1]["status"] == "queued", found
                assert time.monotonic() < deadline, "the ticket was never served"
                await asyncio.sleep(0.05)
            assert "codes" not in found[1] and found[1]["code"] == "unavailable", found
        deadline = time.monotonic() + 10
        while (found := await _get(engine, ticket["order_id"]))[0] != 200:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.05)
        assert found[1]["status"] == "fulfilled" and found[1]["codes"] == ["ONLY-CODE"]


async def test_a_webhook_with_codes_waits_for_the_replica(
        pair: tuple[RedisProcess, RedisProcess]) -> None:
    master, replica = pair
    receiver = EventReceiver()
    async with serving("/hook", receiver.handle) as hook, _engine(master, 1) as engine:
        status, ticket = await engine.order(notify_url=hook)
        assert status == 202 and ticket["status"] == "queued", ticket
        await eventually(lambda: receiver.events != [], what="the queued event")
        with _stopped(replica):
            resp = await engine.http.post(
                "/admin/skus/card-100/stock", data="HOOK-CODE", params={"lot": "lot1"},
                headers={**auth("key-operator"), "Content-Type": "text/plain"})
            assert resp.status == 503  # imported, not yet replicated: the ticket is served
            await asyncio.sleep(1.5)  # the sender tries (and backs off) meanwhile
            assert [e["status"] for e in receiver.events] == ["queued"], receiver.events
        await eventually(lambda: len(receiver.events) == 2, timeout=15, what="the fulfilled one")
        assert receiver.events[1]["status"] == "fulfilled"
        assert receiver.events[1]["codes"] == ["HOOK-CODE"] and receiver.signatures_ok


def test_the_embedded_redis_cannot_wait_for_replicas() -> None:
    with pytest.raises(ConfigError, match=r"redis\.wait_replicas: the embedded Redis"):
        config.from_mapping(settings_dict(redis={"url": "embedded", "wait_replicas": 1}),
                            environ={})


def test_status_shows_the_replicas_and_what_answers_wait_for(
        pair: tuple[RedisProcess, RedisProcess], tmp_path: Path) -> None:
    master, _ = pair
    for wanted, expected in ((1, "│ replicas per master │ 1 (answers wait for 1) │"),
                             (2, "│ replicas per master │ 1 (answers wait for 2; 1 master "
                                 "short of it: their writes answer 503) │"),
                             (0, "│ replicas per master │ 1 (answers do not wait for them) │")):
        cfg = write_config(tmp_path / f"w{wanted}.toml", settings_dict(
            redis={"url": master.url, "shards": 2, "wait_replicas": wanted}))
        shown = subprocess.run([sys.executable, "-m", "engine", "status", "--config", str(cfg)],
                               capture_output=True, text=True, timeout=60,
                               env={**os.environ, "COLUMNS": "200"})
        assert shown.returncode == 0, shown.stderr
        assert expected in " ".join(shown.stdout.split()), shown.stdout
