"""Redis Cluster: what only a cluster deployment has. (The order path, flash sale,
idempotency, hold and confirm, pauses, points, coupons and the fault tests run on both one
server and the test cluster: their `store` parameter.) Here: a clear refusal to start on an
unhealthy cluster or without a node's URL, the one-slot check every test run makes of every
Lua call, and the least-privilege users on every node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from engine.cli import redis_acl
from engine.config.loading import ConfigError
from engine.store import connection, keys, scripts
from engine.store.embedded import RedisProcess
from tests.cluster import Cluster, cluster_port
from tests.conftest import make_settings, settings_dict, write_config
from tests.test_cli import kamigate


async def test_start_refuses_a_cluster_that_does_not_serve_every_slot(tmp_path: Path) -> None:
    lone = RedisProcess(tmp_path / "lone", port=cluster_port(),
                        extra=["--cluster-enabled", "yes"])  # a node with no slots
    lone.start()
    try:
        with pytest.raises(connection.StoreError) as refused:
            await connection.connect(lone.url, cluster=True, retries=2, delay=0.01)
        assert "not healthy" in str(refused.value) and "every slot" in str(refused.value)
    finally:
        lone.stop()


def test_a_cluster_needs_a_node_url() -> None:
    with pytest.raises(ConfigError) as refused:
        make_settings(redis={"cluster": True, "url": "embedded"})
    assert "redis.cluster: needs redis.url naming a node" in str(refused.value)


async def test_a_call_touching_two_slots_is_caught(redis: Redis) -> None:
    """The session-wide check (tests/conftest.py) can fail: a script called with keys of
    two shards is stopped before it reaches Redis."""
    with pytest.raises(AssertionError, match="2 slots"):
        await scripts.LEASE(redis, [keys.lease(0), keys.lease(2)], ["w", 1000])
    with pytest.raises(AssertionError, match="2 slots"):
        await scripts.run_pipelined(redis, [
            (scripts.LEASE, [keys.lease(0)], ["w", 1000]),
            (scripts.LEASE, [keys.lease(1), keys.lease(3)], ["w", 1000])])


async def test_least_privilege_users_work_on_every_node(redis_cluster: Cluster) -> None:
    for node in redis_cluster.nodes:
        admin = connection.client(f"redis://127.0.0.1:{node.port}")
        try:
            for user in redis_acl.ROLES:
                await admin.execute_command("ACL", "SETUSER",
                                            *redis_acl.rules(user, f"pw-{user}"))
        finally:
            await admin.aclose()
    port = redis_cluster.nodes[0].port
    worker = await connection.connect(
        f"redis://kamigate-worker:pw-kamigate-worker@127.0.0.1:{port}", cluster=True)
    try:
        # a script and a stream read on every shard, wherever its master is
        for shard in range(4):
            assert await scripts.LEASE(worker, [keys.lease(shard)], ["w-acl", 1000]) == 1
            await worker.xadd(keys.stream(shard), {"kick": "x"})
        assert await connection.check_server(worker) is not None
        with pytest.raises(Exception, match=r"(?i)no permissions|NOPERM"):
            await worker.flushall()
    finally:
        for shard in range(4):
            await worker.delete(keys.lease(shard), keys.stream(shard))
        await worker.aclose()


@pytest.mark.parametrize("store", ["cluster"], indirect=True)
async def test_the_commands_work_on_a_cluster(redis_cluster: Cluster, tmp_path: Path,
                                              engine_factory: Any) -> None:
    """status, reconcile, stock import, pause and export against the cluster."""
    raw = settings_dict(redis={"url": redis_cluster.url, "shards": 4, "cluster": True})
    cfg = str(write_config(tmp_path / "k.toml", raw))
    codes_file = tmp_path / "codes.txt"
    codes_file.write_text("".join(f"CL-{i}\n" for i in range(40)))
    done = kamigate("stock", "import", "card-100", str(codes_file), "--config", cfg)
    assert done.returncode == 0 and "added 40" in done.stdout, done.stderr
    engine = await engine_factory(make_settings(**raw))
    status, order = await engine.order(buyer="cl")
    assert status == 201 and order["codes"][0].startswith("CL-"), order
    for argv in (["status"], ["reconcile"], ["pause", "sku:card-100"],
                 ["resume", "sku:card-100"], ["export"]):
        done = kamigate(*argv, "--config", cfg, env={**os.environ, "COLUMNS": "200"})
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        if argv == ["status"]:  # every master asked, none has a replica here
            assert "│ replicas per master │ 0, 0, 0 (answers do not wait for them) │" in \
                " ".join(done.stdout.split()), done.stdout
    assert "0 violations" in kamigate("reconcile", "--config", cfg).stdout
