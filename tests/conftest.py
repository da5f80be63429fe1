"""Fixtures: a real redis-server on a free port, settings, and an engine (front door + worker)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession, TCPConnector
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web_runner import AppRunner, BaseRunner
from redis.asyncio import Redis
from redis.crc import key_slot

from engine import config
from engine.http.app import create_app
from engine.http.serving import DoorRunner
from engine.store import connection, replication, scripts
from engine.store.embedded import RedisProcess, free_port
from engine.worker.consumer import Worker
from tests.cluster import Cluster
from tests.event_receiver import receiver  # noqa: F401  (a fixture for every test module)

SHOP_A_KEY = "key-shop-a"
SHOP_B_KEY = "key-shop-b"
OPERATOR_KEY = "key-operator"
VIEWER_KEY = "key-viewer"
ADMIN_KEY = "key-admin"


@pytest.fixture(autouse=True, scope="session")
def _one_slot_per_script() -> Iterator[None]:
    """Every Lua call of every test touches keys of one cluster slot (one hash tag), as
    Redis Cluster requires: checked on the single server too, for every call made."""
    real_call, real_send = scripts.Script.__call__, scripts._send

    def check(script: scripts.Script, names: Sequence[scripts.KeyArg]) -> None:
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in names}
        assert len(slots) <= 1, f"{script.name}.lua touches keys of {len(slots)} slots: {names}"

    async def call(self: scripts.Script, client: Any, names: Sequence[scripts.KeyArg],
                   args: Sequence[scripts.Arg]) -> Any:
        check(self, names)
        return await real_call(self, client, names, args)

    async def send(client: Any, calls: Sequence[scripts.Call], by_source: bool) -> list[Any]:
        for script, names, _ in calls:
            check(script, names)
        return await real_send(client, calls, by_source)

    scripts.Script.__call__ = call  # type: ignore[method-assign]
    scripts._send = send
    yield
    scripts.Script.__call__ = real_call  # type: ignore[method-assign]
    scripts._send = real_send


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def settings_dict(**sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "redis": {"url": "redis://unused", "shards": 4},
        "orders": {"default_wait_ms": 2000},
        "worker": {"block_ms": 20, "lease_s": 1.0},
        "storefronts": [
            {"id": "shop-a", "key_sha256": config.sha256_hex(SHOP_A_KEY)},
            {"id": "shop-b", "key_sha256": config.sha256_hex(SHOP_B_KEY)},
        ],
        "admins": [
            {"id": "ops", "role": "operator", "key_sha256": config.sha256_hex(OPERATOR_KEY)},
            {"id": "watch", "role": "viewer", "key_sha256": config.sha256_hex(VIEWER_KEY)},
            {"id": "root", "role": "admin", "key_sha256": config.sha256_hex(ADMIN_KEY)},
        ],
        "skus": [
            {"id": "card-100", "max_qty": 10},
            {"id": "card-limited", "max_qty": 5, "buyer_limit": 3},
            {"id": "card-reject", "on_sold_out": "reject"},
        ],
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(name), dict):
            base[name] = {**base[name], **value}
        else:
            base[name] = value
    return base


def make_settings(**sections: Any) -> config.Settings:
    return config.from_mapping(settings_dict(**sections), environ={})


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path_factory.mktemp("redis"), port=free_port())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    found = Cluster(tmp_path_factory.mktemp("cluster"))
    found.start()
    yield found
    found.stop()


@pytest.fixture
def store(request: pytest.FixtureRequest) -> str:
    """Where the test's engine keeps its data: "single" (one redis-server, the default) or
    "cluster" (three masters); a test runs on both with
    @pytest.mark.parametrize("store", STORES, indirect=True)."""
    return str(getattr(request, "param", "single"))


STORES = ["single", "cluster"]


@pytest.fixture
def store_url(store: str, request: pytest.FixtureRequest) -> str:
    if store == "cluster":
        found: Cluster = request.getfixturevalue("redis_cluster")
        return found.url
    server: RedisProcess = request.getfixturevalue("redis_server")
    return server.url


@pytest.fixture
async def redis(store: str, store_url: str) -> AsyncIterator[Redis]:
    client = connection.client(store_url, cluster=store == "cluster")
    if store == "cluster":
        await client.flushall(target_nodes="primaries")  # type: ignore[call-arg]
        await client.script_flush()  # the cluster client sends it to every node
    else:
        await client.flushall()
        await client.script_flush()
    yield client
    await client.aclose()


class DoorTestServer(TestServer):
    """The test server on the door's own runner (the lean order routes), as `kamigate up`
    serves; with KAMIGATE_TEST_LEAN_ROUTES=0 on aiohttp's plain runner, every route the
    ordinary way (CI runs the order-path tests both ways)."""

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        # as `kamigate up` serves: a handler goes on when its client leaves (aiohttp's test
        # server would cancel it)
        kwargs["handler_cancellation"] = False
        if os.environ.get("KAMIGATE_TEST_LEAN_ROUTES") == "0":
            return AppRunner(self.app, **kwargs)
        return DoorRunner(self.app, **kwargs)


class Engine:
    """A front door (in-process test server) and a worker task, on the test Redis."""

    def __init__(self, settings: config.Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.client: TestClient[Any, Any] | None = None
        self.worker: Worker | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._clients: list[Redis] = []

    @property
    def http(self) -> TestClient[Any, Any]:
        assert self.client is not None
        return self.client

    async def start(self, worker: bool = True) -> Engine:
        app = create_app(self.settings, self.url)
        self.client = TestClient(DoorTestServer(app))
        await self.client.start_server()
        if worker:
            await self.start_worker()
        return self

    def _new_worker(self) -> Worker:
        """A worker with clients of its own, as `kamigate worker` connects them."""
        redis = connection.client(self.url, cluster=self.settings.redis.cluster)
        replication.require(redis, self.settings.redis.wait_replicas,
                            self.settings.redis.wait_timeout_ms)
        blocking = connection.client(self.url, timeout=10,
                                     cluster=self.settings.redis.cluster)
        self._clients += [redis, blocking]
        self.worker = Worker(self.settings, redis, blocking)
        return self.worker

    async def start_worker(self) -> Worker:
        worker = self._new_worker()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(worker.run(self._stop))
        return worker

    def stepped_worker(self) -> Worker:
        """A worker that runs only when the test steps it (`drain`, `chores`): what it has
        not done by then, it did not do, with no sleep to wait it out."""
        assert self._task is None, "the engine already runs a worker of its own"
        return self._new_worker()

    async def stop_worker(self) -> None:
        if self._task is not None:
            self._stop.set()
            await asyncio.wait_for(self._task, 10)
            self._task = None

    async def close(self) -> None:
        await self.stop_worker()
        if self.client is not None:
            await self.client.close()
        for client in self._clients:
            await client.aclose()

    async def order(self, key: str = SHOP_A_KEY, **body: Any) -> tuple[int, dict[str, Any]]:
        payload = {"sku": "card-100", "qty": 1, "buyer": "b1", **body}
        headers = auth(key)
        idem = payload.pop("idempotency_key", None)
        if idem is not None:
            headers["Idempotency-Key"] = idem
        resp = await self.http.post("/v1/orders", json=payload, headers=headers)
        return resp.status, await resp.json()

    async def import_codes(self, sku: str, codes: list[str], lot: str = "lot1",
                           **query: str) -> dict[str, Any]:
        resp = await self.http.post(
            f"/admin/skus/{sku}/stock", data="\n".join(codes),
            params={"lot": lot, **query},
            headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"},
        )
        assert resp.status == 200, await resp.text()
        body: dict[str, Any] = await resp.json()
        return body


EngineFactory = Callable[..., Awaitable[Engine]]


@pytest.fixture
async def engine_factory(
    store: str, store_url: str, redis: Redis
) -> AsyncIterator[EngineFactory]:
    made: list[Engine] = []

    async def make(settings: config.Settings | None = None, worker: bool = True) -> Engine:
        settings = settings or make_settings()
        if store == "cluster":
            settings = msgspec.structs.replace(settings, redis=msgspec.structs.replace(
                settings.redis, cluster=True))
        engine = Engine(settings, store_url)
        made.append(engine)
        return await engine.start(worker=worker)

    yield make
    for engine in made:
        await engine.close()


@pytest.fixture
async def engine(engine_factory: EngineFactory) -> Engine:
    return await engine_factory()


def codes(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:06d}" for i in range(n)]


async def post_many(base_url: str, bodies: list[dict[str, Any]], key: str = SHOP_A_KEY,
                    limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
    """POST /v1/orders concurrently, every request in flight at once up to `limit` sockets."""
    async with ClientSession(connector=TCPConnector(limit=limit)) as session:
        async def one(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            async with session.post(f"{base_url}/v1/orders", json=body, headers=auth(key)) as r:
                return r.status, await r.json(content_type=None)
        return await asyncio.gather(*(one(b) for b in bodies))


def write_config(path: Path, settings_raw: dict[str, Any]) -> Path:
    """A TOML config file from a settings dict (for subprocess workers)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {value(x)}" for k, x in v.items()) + "}"
        return msgspec.json.encode(v).decode()

    for name, section in settings_raw.items():
        if isinstance(section, dict):
            lines.append(f"[{name}]")
            lines += [f"{k} = {value(v)}" for k, v in section.items()]
        else:
            for item in section:
                lines.append(f"[[{name}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def engine_process(argv: list[str], failpoint: str = "") -> Iterator[Any]:
    """`python -m engine ARGV` (KAMIGATE_FAILPOINT armed when given); killed on exit."""
    import subprocess

    env = {**os.environ, "KAMIGATE_FAILPOINT": failpoint}
    if argv[:1] == ["serve"] and "--processes" not in argv:
        # one door: what a test kills is the whole front door (a second one would outlive it)
        argv = [*argv, "--processes", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "engine", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def worker_process(config_path: Path) -> contextlib.AbstractContextManager[Any]:
    return engine_process(["worker", "--config", str(config_path)])


async def eventually(predicate: Callable[[], Awaitable[bool] | bool], timeout: float = 8.0,
                     every: float = 0.05, what: str = "the condition",
                     ignoring: tuple[type[BaseException], ...] = ()) -> None:
    """Wait until a predicate (sync or async) holds; fail the test after `timeout` seconds.

    `ignoring`: exceptions that mean "not yet" (a server still starting up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            held = predicate()
            if inspect.isawaitable(held):
                held = await held
            if held:
                return
        except ignoring:
            pass
        await asyncio.sleep(every)
    raise AssertionError(f"{what} not reached within {timeout:g} s")


async def wait_ready(base: str, timeout: float = 20) -> None:
    """Wait until the front door at `base` answers /readyz with 200."""
    import aiohttp

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the front door never became ready")
