"""The engine runs under the least-privilege Redis users of engine/redis_acl.py: the front
door, the worker and the operator each with their own user, none of them able to touch
another application's keys or run a dangerous command."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.exceptions import NoPermissionError, ResponseError

from engine import config
from engine.cli import redis_acl
from engine.http.app import create_app
from engine.stock.reconcile import reconcile
from engine.store import connection
from engine.store.embedded import RedisProcess, free_port
from engine.worker.consumer import Worker
from tests.conftest import OPERATOR_KEY, SHOP_A_KEY, DoorTestServer, auth, codes, settings_dict


def _as(url: str, user: str) -> str:
    return url.replace("redis://", f"redis://{user}:pw-{user}@")


async def test_the_engine_runs_under_least_privilege_users(tmp_path: Path) -> None:
    server = RedisProcess(tmp_path / "redis", port=free_port())
    server.start()
    root = connection.client(server.url)
    clients: list[Any] = [root]
    try:
        for user in redis_acl.ROLES:
            await root.execute_command("ACL", "SETUSER", *redis_acl.rules(user, f"pw-{user}"))
        door_url, worker_url = _as(server.url, "kamigate-door"), _as(server.url,
                                                                     "kamigate-worker")
        settings = config.from_mapping(settings_dict(redis={"url": door_url, "shards": 2}),
                                       environ={})
        client = TestClient(DoorTestServer(create_app(settings, door_url)))
        await client.start_server()
        redis, blocking = connection.client(worker_url), connection.client(worker_url, timeout=10)
        clients += [redis, blocking]
        worker = Worker(settings, redis, blocking)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            imported = codes("ACL", 5)
            resp = await client.post("/admin/skus/card-100/stock?lot=a", data="\n".join(imported),
                                     headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
            assert resp.status == 200, await resp.text()
            resp = await client.post("/v1/orders", json={"sku": "card-100", "qty": 2,
                                                         "buyer": "acl"},
                                     headers=auth(SHOP_A_KEY))
            body = await resp.json()
            assert resp.status == 201 and len(body["codes"]) == 2, body
            assert (await client.get("/readyz")).status == 200
            assert (await client.get("/metrics")).status == 200
            admin = connection.client(_as(server.url, "kamigate-admin"))
            clients.append(admin)
            report = await reconcile(admin, 2, ["card-100"])
            assert report.ok, report.violations
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await client.close()
        door = connection.client(door_url)
        clients.append(door)
        for denied in (door.flushall(), door.keys("*"), door.config_get("*"),
                       door.xreadgroup("kamigate", "x", {"kg:{s0}:orders": ">"}),
                       door.set("other-app:key", "x")):
            with pytest.raises((NoPermissionError, ResponseError)):
                await denied
    finally:
        for c in clients:
            await c.aclose()
        server.stop()


def test_the_cli_prints_the_users(capsys: pytest.CaptureFixture[str]) -> None:
    from engine.cli import main

    assert main(["redis-acl"]) == 0
    out = capsys.readouterr().out
    assert out.count("ACL SETUSER") == 3 and "~kg:*" in out and "-@dangerous" in out
