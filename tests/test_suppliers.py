"""Suppliers that restock by themselves, against a real HTTP supplier on loopback: asked
(signed, with a request_id) when a SKU runs low or has a sold-out line, its batch imported
as a lot and the line served; a supplier that fails, answers slowly, answers nonsense or
sends a batch twice is backed off, never blocks the shard, and never adds a code twice.
The worker is stepped and its clock driven; only the supplier's own slowness is real time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from engine.clock import now_ms
from engine.config.loading import ConfigError
from engine.stock import supplies
from engine.stock.reconcile import reconcile
from engine.store import keys
from engine.store.embedded import RedisProcess
from engine.worker.consumer import Worker
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    make_settings,
    settings_dict,
    write_config,
)
from tests.event_receiver import serving
from tests.test_cli import kamigate

SECRET = "supplier-secret-of-at-least-32-chars"
Answer = Callable[["Supplier", dict[str, Any]], Awaitable[web.Response]]


def batch(batch_id: str, codes: list[str], expires_at: str | None = None) -> Answer:
    async def answer(_: Supplier, __: dict[str, Any]) -> web.Response:
        return web.json_response({"batch_id": batch_id, "codes": codes,
                                  "expires_at": expires_at})
    return answer


def failing(status: int = 503) -> Answer:
    async def answer(_: Supplier, __: dict[str, Any]) -> web.Response:
        return web.Response(status=status)
    return answer


def slow(seconds: float, then: Answer) -> Answer:
    async def answer(supplier: Supplier, body: dict[str, Any]) -> web.Response:
        await asyncio.sleep(seconds)
        return await then(supplier, body)
    return answer


def raw(text: str) -> Answer:
    async def answer(_: Supplier, __: dict[str, Any]) -> web.Response:
        return web.Response(text=text, content_type="application/json")
    return answer


class Supplier:
    """The supplier's endpoint: checks each request's signature, answers from a script."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.requests: list[dict[str, Any]] = []
        self.signatures_ok = True

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        parts = dict(p.split("=", 1) for p in request.headers["Kamigate-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        self.signatures_ok &= hmac.compare_digest(parts["v1"], expected)
        payload = json.loads(body)
        self.requests.append(payload)
        answer = self.script.pop(0) if self.script else failing(500)
        return await answer(self, payload)


@pytest.fixture
async def supplier() -> AsyncIterator[tuple[Supplier, str]]:
    found = Supplier()
    async with serving("/restock", found.handle) as url:
        yield found, url


def _settings(endpoint: str, **supplier: Any) -> Any:
    return make_settings(redis={"shards": 1}, suppliers=[{
        "id": "acme", "url": endpoint, "skus": ["card-100"], "low_water": 2, "batch": 3,
        "secret": SECRET, "timeout_s": 2.0, "max_backoff_s": 60, **supplier}])


async def _stepped(engine_factory: EngineFactory, url: str, **supplier: Any
                   ) -> tuple[Engine, Worker]:
    engine = await engine_factory(_settings(url, **supplier), worker=False)
    worker = engine.stepped_worker()
    await worker.maintain_leases(force=True)
    return engine, worker


async def _state(redis: Redis) -> supplies.SupplyState:
    return (await supplies.load(redis, 0))["acme|card-100"]


async def test_a_sold_out_line_is_restocked_and_served(
    engine_factory: EngineFactory, supplier: tuple[Supplier, str], redis: Redis,
) -> None:
    endpoint, url = supplier
    engine = await engine_factory(_settings(url), worker=False)
    worker = engine.stepped_worker()
    tickets = [(await engine.order(buyer=f"rs{i}", wait_ms=0))[1] for i in range(2)]
    await worker.drain()
    endpoint.script = [batch("acme-b1", ["RS-1", "RS-2", "RS-3"])]
    assert await worker.restocker.round(sorted(worker.owned), now_ms(), force=True) == 1
    await worker.restocker.settle()
    [asked] = endpoint.requests
    assert endpoint.signatures_ok
    assert asked["sku"] == "card-100" and asked["qty"] == 3 and asked["request_id"]
    await worker.drain()  # the import ran the line
    for ticket in tickets:
        resp = await engine.http.get(f"/v1/orders/{ticket['order_id']}",
                                     headers=auth(SHOP_A_KEY))
        view = await resp.json()
        assert view["status"] == "fulfilled" and view["codes"][0].startswith("RS-"), view
    state = await _state(redis)
    assert (state.codes_received, state.batches, state.failures, state.request_id) == \
        (3, 1, 0, "")
    assert state.last_success_ms > 0 and state.last_batch == "acme-b1"
    assert b"acme-b1" in await redis.hkeys(keys.lots("card-100", 0))
    audit = await (await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))).json()
    [restock] = [e for e in audit["events"] if e.get("action") == "stock.restock"]
    assert restock["who"] == "supplier:acme" and restock["details"]["added"] == 3
    metrics = await (await engine.http.get("/metrics")).text()
    assert 'kamigate_supplier_codes_received{sku="card-100",supplier="acme"} 3.0' in metrics
    # 1 code left, under low_water 2: asked again, with a new request_id
    endpoint.script = [batch("acme-b2", ["RS-4"])]
    assert await worker.restocker.round(sorted(worker.owned), now_ms(), force=True) == 1
    await worker.restocker.settle()
    assert endpoint.requests[1]["request_id"] != asked["request_id"]


async def test_failures_back_off_with_jitter_and_keep_the_request_id(
    engine_factory: EngineFactory, supplier: tuple[Supplier, str], redis: Redis,
) -> None:
    endpoint, url = supplier
    engine, worker = await _stepped(engine_factory, url)
    start = now_ms()
    endpoint.script = [failing(503), failing(500)]
    owned = sorted(worker.owned)
    assert await worker.restocker.round(owned, start, force=True) == 1
    await worker.restocker.settle()
    state = await _state(redis)
    assert state.failures == 1 and state.last_error == "HTTP 503" and state.request_id
    assert start + 500 <= state.next_at_ms <= start + 1500  # 1 s, jittered 0.5-1.5x
    assert await worker.restocker.round(owned, start + 100, force=True) == 0  # backing off
    assert await worker.restocker.round(owned, state.next_at_ms, force=True) == 1
    await worker.restocker.settle()
    state = await _state(redis)
    assert state.failures == 2
    assert 1000 <= state.next_at_ms - state.last_attempt_ms <= 3000  # 2 s, jittered
    # a worker that takes the shard over sends the same request again
    await worker.release()
    successor = engine.stepped_worker()
    await successor.maintain_leases(force=True)
    endpoint.script = [batch("acme-b9", ["FB-1", "FB-2", "FB-3"])]
    assert await successor.restocker.round(owned, state.next_at_ms, force=True) == 1
    await successor.restocker.settle()
    assert [r["request_id"] for r in endpoint.requests] == [state.request_id] * 3
    state = await _state(redis)
    assert state.failures == 0 and state.codes_received == 3 and state.failed == 2
    metrics = await (await engine.http.get("/metrics")).text()
    assert 'kamigate_supplier_failures{sku="card-100",supplier="acme"} 2.0' in metrics


async def test_a_slow_supplier_never_holds_up_the_shard(
    engine_factory: EngineFactory, supplier: tuple[Supplier, str], redis: Redis,
) -> None:
    endpoint, url = supplier
    engine, worker = await _stepped(engine_factory, url, timeout_s=0.5)
    await engine.import_codes("card-limited", ["OTHER-1"])
    endpoint.script = [slow(1.5, batch("late", ["L-1"]))]
    assert await worker.restocker.round(sorted(worker.owned), now_ms(), force=True) == 1
    status, other = await engine.order(sku="card-limited", buyer="other", wait_ms=0)
    assert status == 202
    await worker.drain()  # while the supplier is still thinking
    assert worker.restocker.running, "the request should still be in flight"
    resp = await engine.http.get(f"/v1/orders/{other['order_id']}", headers=auth(SHOP_A_KEY))
    assert (await resp.json())["status"] == "fulfilled"
    await worker.restocker.settle()
    state = await _state(redis)
    assert state.last_error == "timed out" and state.codes_received == 0
    assert int(await redis.hget(keys.sku_counts("card-100", 0), "imported") or 0) == 0


async def test_a_batch_sent_twice_adds_its_codes_once(
    engine_factory: EngineFactory, supplier: tuple[Supplier, str], redis: Redis,
) -> None:
    endpoint, url = supplier
    _engine, worker = await _stepped(engine_factory, url, low_water=10)
    owned = sorted(worker.owned)
    twice = batch("acme-same", ["SAME-1", "SAME-2", "SAME-3"])
    endpoint.script = [twice, twice]
    assert await worker.restocker.round(owned, now_ms(), force=True) == 1
    await worker.restocker.settle()
    assert await worker.restocker.round(owned, now_ms(), force=True) == 1  # still under 10
    await worker.restocker.settle()
    counts = await redis.hgetall(keys.sku_counts("card-100", 0))
    assert int(counts[b"imported"]) == 3 and int(counts[b"available"]) == 3
    state = await _state(redis)
    assert (state.codes_received, state.duplicates, state.batches) == (3, 3, 2)
    assert "no new codes" in state.last_error and state.next_at_ms > now_ms()
    report = await reconcile(redis, 1, ["card-100"])
    assert report.violations == []


@pytest.mark.parametrize(("answer", "error"), [
    (raw("not json"), "the answer is not JSON"),
    (raw('{"batch_id": "ok"}'), "codes: must be a list of strings"),
    (raw('{"batch_id": "../etc", "codes": ["X"]}'), "batch_id: 1-64 characters"),
    (raw('{"batch_id": "b", "codes": ["X"], "expires_at": "soon"}'), "expires_at: an RFC 3339"),
    (raw('[1, 2]'), "the answer is not a JSON object"),
])
async def test_a_nonsense_answer_imports_nothing_and_says_why(
    engine_factory: EngineFactory, supplier: tuple[Supplier, str], redis: Redis,
    answer: Answer, error: str,
) -> None:
    endpoint, url = supplier
    _engine, worker = await _stepped(engine_factory, url)
    endpoint.script = [answer]
    await worker.restocker.round(sorted(worker.owned), now_ms(), force=True)
    await worker.restocker.settle()
    state = await _state(redis)
    assert state.last_error.startswith(error) and state.failures == 1
    assert await redis.hget(keys.sku_counts("card-100", 0), "imported") is None


@pytest.mark.parametrize(("supplier_", "error"), [
    ({"skus": ["no-such"]}, "suppliers[0].skus[0]: no SKU 'no-such' is configured"),
    ({"secret": "short"}, "suppliers[0].secret: a secret needs at least 32"),
    ({"secret": ""}, "suppliers[0].secret: every request to a supplier is signed"),
    ({"url": "ftp://x"}, "suppliers[0].url: must be an http(s) URL"),
    ({"batch": 0}, "suppliers[0].batch"),
])
def test_a_bad_supplier_is_refused_naming_the_field(supplier_: dict[str, Any],
                                                    error: str) -> None:
    with pytest.raises(ConfigError) as found:
        _settings("http://127.0.0.1:9/restock", **supplier_)
    assert error in str(found.value)


def test_a_sku_has_one_supplier() -> None:
    one = {"url": "http://127.0.0.1:9/r", "skus": ["card-100"], "secret": SECRET}
    with pytest.raises(ConfigError) as found:
        make_settings(suppliers=[{"id": "a", **one}, {"id": "b", **one}])
    assert "suppliers[1].skus[0]: 'card-100' is already restocked by supplier 'a'" in \
        str(found.value)


async def test_status_shows_each_supplier(redis_server: RedisProcess, redis: Redis,
                                          tmp_path: Path) -> None:
    raw_settings = settings_dict(redis={"url": redis_server.url, "shards": 4}, suppliers=[{
        "id": "acme", "url": "http://127.0.0.1:9/r", "skus": ["card-100", "card-limited"],
        "secret": SECRET}])
    state = supplies.SupplyState(supplier="acme", sku="card-100", codes_received=1234,
                                 batches=2, failed=3, failures=1, last_error="HTTP 503",
                                 last_success_ms=1_700_000_000_000)
    await supplies.save(redis, keys.shard_of_sku("card-100", 4), state)
    done = kamigate("status", "--config", str(write_config(tmp_path / "k.toml", raw_settings)),
                    env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    assert "suppliers" in done.stdout and "1,234" in done.stdout and "HTTP 503" in done.stdout
    assert "never asked" in done.stdout  # card-limited
