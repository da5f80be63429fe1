"""The lean order routes answer exactly as aiohttp's path does, keep every connection rule
(keep-alive, pipelining in order, HTTP/1.0, Expect, chunked bodies, limits) and hand every
other request on the same connection to the application."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from engine.http import lean
from engine.wire import msgpack_encode
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
)

Raw = tuple[str, dict[str, str], bytes]  # status line, headers (lower-case names), body


@pytest.fixture
def lean_answers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the lean door answered (a spy around lean.answer)."""
    seen: list[str] = []
    real = lean.answer

    async def spy(call: lean.LeanCall) -> lean.LeanResponse:
        seen.append(f"{call.method} {call.path}")
        return await real(call)

    monkeypatch.setattr(lean, "answer", spy)
    return seen


async def _read_answer(reader: asyncio.StreamReader) -> Raw:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in filter(None, lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(length), 10) if length else b""
    return status, headers, body


async def _exchange(engine: Engine, data: bytes, answers: int) -> tuple[list[Raw], bool]:
    """Send `data` in one write; read `answers` answers; and whether the door closed."""
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    try:
        writer.write(data)
        await writer.drain()
        found = [await _read_answer(reader) for _ in range(answers)]
        try:
            closed = await asyncio.wait_for(reader.read(1), 0.5) == b""
        except TimeoutError:
            closed = False
        return found, closed
    finally:
        writer.close()


def _request(method: str, path: str, body: bytes = b"", version: str = "1.1",
             key: str = SHOP_A_KEY, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: door", f"Authorization: Bearer {key}"]
    if body or method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _order(buyer: str = "b1", **more: Any) -> bytes:
    return json.dumps({"sku": "card-100", "qty": 1, "buyer": buyer, **more}).encode()


def _same_shape(a: Raw, b: Raw) -> None:
    """Two answers alike but for what differs per order (ids, times, codes, the date)."""
    def shape(raw: Raw) -> tuple[Any, ...]:
        status, headers, body = raw
        names = sorted(set(headers) - {"date"})
        def outline(doc: Any) -> Any:  # an order: its fields' names only
            return sorted(doc) if isinstance(doc, dict) and "order_id" in doc else doc
        doc = json.loads(body) if body else None
        if isinstance(doc, dict) and "results" in doc:
            doc = [outline(result) for result in doc["results"]]
        return status, names, headers.get("content-type"), outline(doc)
    assert shape(a) == shape(b)


REQUESTS: list[tuple[str, Callable[[], bytes]]] = [
    ("an order", lambda: _request("POST", "/v1/orders", _order())),
    ("a batch", lambda: _request("POST", "/v1/orders/batch", json.dumps({"orders": [
        json.loads(_order("b2")), {"sku": "nope", "qty": 1, "buyer": "b3"}]}).encode())),
    ("an unknown field", lambda: _request("POST", "/v1/orders", _order(colour="red"))),
    ("broken JSON", lambda: _request("POST", "/v1/orders", b'{"sku": ')),
    ("a wrong key", lambda: _request("POST", "/v1/orders", _order(), key="nope")),
    ("an admin key", lambda: _request("POST", "/v1/orders", _order(), key=OPERATOR_KEY)),
    ("an unknown SKU", lambda: _request("POST", "/v1/orders", _order(sku="nope"))),
    ("a bad Idempotency-Key", lambda: _request("POST", "/v1/orders", _order(),
                                               Idempotency_Key="a b")),
    ("an order not there", lambda: _request("GET", "/v1/orders/o_" + "0" * 20)),
    ("a body too large", lambda: _request("POST", "/v1/orders", b"x" * 70_000)),
    ("text/csv", lambda: _request("POST", "/v1/orders", _order()).replace(
        b"application/json", b"text/csv")),
]


async def _switch(engine: Engine, lean_routes: bool) -> None:
    """Turn the lean path on or off with a config reload, as an operator does."""
    resp = await engine.http.put("/admin/config", headers=auth(ADMIN_KEY),
                                 json=settings_dict(server={"lean_routes": lean_routes}))
    assert resp.status == 200, await resp.text()


@pytest.mark.parametrize("what,make", REQUESTS, ids=[what for what, _ in REQUESTS])
async def test_each_answer_is_the_one_aiohttp_gives(
        engine: Engine, lean_answers: list[str], what: str, make: Callable[[], bytes]) -> None:
    await engine.import_codes("card-100", codes("LEAN", 10))
    await _switch(engine, False)
    (expected,), _ = await _exchange(engine, make(), 1)
    assert lean_answers == []  # aiohttp's path answered
    await _switch(engine, True)
    (found,), _ = await _exchange(engine, make(), 1)
    assert lean_answers, what
    _same_shape(found, expected)
    if what in ("an order", "a batch"):
        assert found[0].startswith("HTTP/1.1 20"), found
        assert json.loads(found[2]).get("status", "fulfilled") == "fulfilled"
    if found[1]["content-type"] == "application/problem+json":
        assert json.loads(found[2]) == json.loads(expected[2])


async def test_pipelined_requests_are_answered_in_order_across_both_paths(
        engine: Engine, lean_answers: list[str]) -> None:
    await engine.import_codes("card-100", codes("PIPE", 10))
    data = b"".join([
        _request("POST", "/v1/orders", _order("p1")),
        _request("GET", "/healthz"),
        _request("POST", "/v1/orders", _order("p2", wait_ms=0)),
        _request("GET", "/admin/skus/card-100", key=OPERATOR_KEY),
        _request("POST", "/v1/orders/batch", json.dumps({"orders": [
            json.loads(_order("p3"))]}).encode()),
    ])
    answers, closed = await _exchange(engine, data, 5)
    assert not closed
    statuses = [status.split(" ")[1] for status, _, _ in answers]
    assert statuses[0] == "201" and json.loads(answers[0][2])["buyer"] == "p1"
    assert json.loads(answers[1][2])["status"] == "ok"
    assert statuses[2] in ("201", "202") and json.loads(answers[2][2])["buyer"] == "p2"
    assert json.loads(answers[4][2])["results"][0]["buyer"] == "p3"
    assert lean_answers == ["POST /v1/orders", "POST /v1/orders", "POST /v1/orders/batch"]
    order_id = json.loads(answers[0][2])["order_id"]
    (read,), _ = await _exchange(engine, _request("GET", f"/v1/orders/{order_id}"), 1)
    assert json.loads(read[2])["codes"] == json.loads(answers[0][2])["codes"]
    assert lean_answers[-1] == f"GET /v1/orders/{order_id}"


async def test_connection_rules_of_both_http_versions(engine: Engine,
                                                      lean_answers: list[str]) -> None:
    await engine.import_codes("card-100", codes("VERS", 10))
    (answer,), closed = await _exchange(engine, _request("POST", "/v1/orders", _order(),
                                                         version="1.0"), 1)
    assert answer[0] == "HTTP/1.0 201 Created" and closed
    (answer,), closed = await _exchange(engine, _request(
        "POST", "/v1/orders", _order(), version="1.0", Connection="keep-alive"), 1)
    assert answer[1]["connection"] == "keep-alive" and not closed
    (answer,), closed = await _exchange(engine, _request(
        "POST", "/v1/orders", _order(), Connection="close"), 1)
    assert answer[0] == "HTTP/1.1 201 Created" and answer[1]["connection"] == "close"
    assert closed
    assert len(lean_answers) == 3


async def test_expect_continue_and_chunked_bodies(engine: Engine,
                                                  lean_answers: list[str]) -> None:
    await engine.import_codes("card-100", codes("CHUNK", 10))
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    body = _order("e1")
    writer.write(_request("POST", "/v1/orders", Expect="100-continue").replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode()))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(
        b"HTTP/1.1 100 Continue")
    writer.write(body)
    status, _, answer = await _read_answer(reader)
    assert status == "HTTP/1.1 201 Created" and json.loads(answer)["buyer"] == "e1"
    assert lean_answers == []  # Expect takes aiohttp's path
    chunked = _request("POST", "/v1/orders", Transfer_Encoding="chunked").replace(
        b"Content-Length: 0\r\n", b"")
    half = len(body) // 2
    for piece in (body[:half], body[half:]):
        chunked += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    writer.write(chunked[:-len(body) // 2])
    await writer.drain()
    await asyncio.sleep(0.1)  # the body arrives in two reads
    writer.write(chunked[-len(body) // 2:] + b"0\r\n\r\n")
    status, _, answer = await _read_answer(reader)
    assert status == "HTTP/1.1 201 Created" and json.loads(answer)["buyer"] == "e1"
    assert lean_answers == ["POST /v1/orders"]
    huge = b'{"sku": "card-100", "qty": 1, "buyer": "' + b"x" * 70_000 + b'"}'
    writer.write(_request("POST", "/v1/orders", Transfer_Encoding="chunked").replace(
        b"Content-Length: 0\r\n", b"") + f"{len(huge):x}\r\n".encode() + huge
        + b"\r\n0\r\n\r\n")
    status, headers, answer = await _read_answer(reader)
    assert status.startswith("HTTP/1.1 413") and json.loads(answer)["code"] == "payload_too_large"
    assert headers["content-type"] == "application/problem+json"
    writer.close()


async def test_maintenance_breaker_limits_and_metrics_hold_on_the_lean_path(
        engine_factory: EngineFactory, lean_answers: list[str]) -> None:
    engine = await engine_factory(make_settings(
        limits={"per_buyer": {"rate": 0.001, "burst": 1}}))
    await engine.import_codes("card-100", codes("RULE", 10))
    (first, second), _ = await _exchange(engine, _request("POST", "/v1/orders", _order("r1"))
                                         + _request("POST", "/v1/orders", _order("r1")), 2)
    assert first[0].startswith("HTTP/1.1 201") and "ratelimit" in first[1]
    assert second[0].startswith("HTTP/1.1 429") and second[1]["retry-after"]
    assert json.loads(second[2])["code"] == "rate_limited"
    resp = await engine.http.put("/admin/maintenance", json={"mode": "full"},
                                 headers=auth(OPERATOR_KEY))
    assert resp.status == 200
    (closed,), _ = await _exchange(engine, _request("POST", "/v1/orders", _order("r2")), 1)
    assert closed[0].startswith("HTTP/1.1 503")
    assert json.loads(closed[2])["code"] == "maintenance" and closed[1]["retry-after"]
    metrics = await (await engine.http.get("/metrics")).text()
    assert 'route="/v1/orders"' in metrics
    assert lean_answers == ["POST /v1/orders"] * 3


async def test_msgpack_answers_and_a_client_that_leaves(engine: Engine,
                                                        lean_answers: list[str]) -> None:
    await engine.import_codes("card-100", codes("PACK", 10))
    body = msgpack_encode({"sku": "card-100", "qty": 1, "buyer": "m1"})
    data = _request("POST", "/v1/orders", body, Accept="application/msgpack").replace(
        b"application/json", b"application/msgpack")
    (answer,), _ = await _exchange(engine, data, 1)
    assert answer[1]["content-type"] == "application/msgpack"
    assert msgspec.msgpack.decode(answer[2])["buyer"] == "m1"
    # an order whose client hangs up while it waits is still decided; the door goes on
    await engine.stop_worker()
    server = engine.http.server
    _, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    writer.write(_request("POST", "/v1/orders", _order("gone")))
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.close()
    await engine.start_worker()
    (answer,), _ = await _exchange(engine, _request("POST", "/v1/orders", _order("m2")), 1)
    assert answer[0] == "HTTP/1.1 201 Created"
    assert len(lean_answers) == 3




def test_bearer_keys_are_remembered_only_when_they_match() -> None:
    from engine.config.directory import Directory

    directory = Directory(make_settings())
    first = directory.principal(SHOP_A_KEY)
    assert first is not None and directory.principal(SHOP_A_KEY) is first
    for n in range(100):
        assert directory.principal(f"guess-{n}") is None
    assert directory._known == {SHOP_A_KEY: first}
    # a reload builds a new Directory: a key taken out of the config is not known there
    fewer = make_settings(storefronts=[{"id": "shop-b", "key_sha256": "0" * 64}])
    assert Directory(fewer).principal(SHOP_A_KEY) is None


async def test_a_client_that_pipelines_without_reading_gets_every_answer_in_order(
        engine: Engine, lean_answers: list[str]) -> None:
    """More answers than the write buffer holds: the door waits for the client to read
    (no answer lost or reordered, no memory without bound)."""
    ids = [f"o_{n:020x}" for n in range(6000)]
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    writer.write(b"".join(_request("GET", f"/v1/orders/{order_id}") for order_id in ids))
    await writer.drain()
    await asyncio.sleep(0.5)  # the door fills its buffer and the socket's, then waits
    for order_id in ids:
        status, _, body = await _read_answer(reader)
        assert status.startswith("HTTP/1.1 404") and order_id in json.loads(body)["detail"]
    writer.close()
    assert len(lean_answers) == len(ids)


BOTH_PATHS = pytest.mark.parametrize("lean_routes", [True, False], ids=["lean", "aiohttp"])


async def _send_in_two_writes(engine: Engine, head: bytes, body: bytes) -> Raw:
    """A request whose body arrives after its headers, in two reads (the door waits)."""
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    try:
        writer.write(head + body[:len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(body[len(body) // 2:])
        return await _read_answer(reader)
    finally:
        writer.close()


@BOTH_PATHS
async def test_a_compressed_body_is_read_whole(engine_factory: EngineFactory,
                                               lean_routes: bool) -> None:
    """1 MB of JSON (leading whitespace, then the order) sent gzipped: more than the stream
    buffers before it pauses reading, so a read resumes decompression and the stream can end
    while decompressed pieces still wait; the door reads every one of them."""
    engine = await engine_factory(make_settings(
        server={"lean_routes": lean_routes, "max_body_bytes": 4 << 20}))
    await engine.import_codes("card-100", codes("GZIP", 5))
    for size in (1_000_000, 300_000, 3_000_000):
        body = gzip.compress(b" " * size + _order("z1"))
        (answer,), _ = await _exchange(engine, _request(
            "POST", "/v1/orders", body, Content_Encoding="gzip"), 1)
        assert answer[0] == "HTTP/1.1 201 Created", (size, answer)
        assert json.loads(answer[2])["buyer"] == "z1"
    # the same, its body arriving in two reads
    body = gzip.compress(b" " * 1_000_000 + _order("z2"))
    whole = _request("POST", "/v1/orders", body, Content_Encoding="gzip")
    status, _, found = await _send_in_two_writes(engine, whole[:-len(body)], body)
    assert status == "HTTP/1.1 201 Created" and json.loads(found)["buyer"] == "z2"
    # over the limit once decompressed, though its compressed length is small: 413
    body = gzip.compress(b" " * (8 << 20) + _order("z3"))
    (answer,), _ = await _exchange(engine, _request(
        "POST", "/v1/orders", body, Content_Encoding="gzip"), 1)
    assert answer[0].startswith("HTTP/1.1 413"), answer


@BOTH_PATHS
async def test_a_body_that_does_not_decompress_is_the_clients_fault(
        engine_factory: EngineFactory, lean_routes: bool) -> None:
    engine = await engine_factory(make_settings(server={"lean_routes": lean_routes}))
    body = b"\x1f\x8b\x08\x00" + b"not gzip at all" * 10
    head = _request("POST", "/v1/orders", b"", Content_Encoding="gzip").replace(
        b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    status, headers, answer = await _send_in_two_writes(engine, head, body)
    assert status[9] == "4", (status, answer)  # a 4xx, whichever aiohttp's parser gives
    assert headers["content-type"].startswith(("application/problem+json", "text/plain"))


@BOTH_PATHS
async def test_clients_that_hang_up_mid_body_never_open_the_breaker(
        engine_factory: EngineFactory, lean_routes: bool) -> None:
    """A client leaving halfway through its body is no store outage: however many do it, the
    breaker stays closed and the next order is served."""
    engine = await engine_factory(make_settings(server={"lean_routes": lean_routes},
                                                breaker={"failures": 2, "open_s": 60}))
    await engine.import_codes("card-100", codes("LEFT", 5))
    server = engine.http.server
    body = _order("gone")
    for _ in range(6):
        _, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
        writer.write(_request("POST", "/v1/orders", body)[:-len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)  # the door is reading the body
        writer.close()
    await asyncio.sleep(0.1)
    (answer,), _ = await _exchange(engine, _request("POST", "/v1/orders", _order("stays")), 1)
    assert answer[0] == "HTTP/1.1 201 Created", answer
    metrics = await (await engine.http.get("/metrics")).text()
    assert "kamigate_breaker_opened_total 0.0" in metrics


async def test_an_answer_that_cannot_be_built_is_a_500_problem_and_the_door_goes_on(
        engine: Engine, lean_answers: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The lean path's last guard: whatever fails while an answer is built, a problem goes
    out (aiohttp's own error answer would need a Request) and the connection stays usable."""
    await engine.import_codes("card-100", codes("FAIL", 5))

    def broken(*_: object) -> tuple[bytes, str]:
        raise RuntimeError("cannot encode")

    monkeypatch.setattr(lean, "encode_body", broken)
    monkeypatch.setattr(lean, "settle_headers", lambda *_: {"Bad": "a\r\nSet-Cookie: x"}[""])
    (first, second), closed = await _exchange(
        engine, _request("POST", "/v1/orders", _order("f1"))
        + _request("GET", "/v1/orders/o_" + "0" * 20), 2)
    for status, headers, body in (first, second):
        assert status == "HTTP/1.1 500 Internal Server Error"
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "internal" and b"\r\nSet-Cookie" not in body
    assert not closed and len(lean_answers) == 2


def test_a_header_with_a_control_character_is_never_written() -> None:
    """A route header carrying CR, LF or another control character would split the answer:
    refused, as aiohttp refuses it."""
    class Message:
        should_close, version = False, lean.HttpVersion11

    call = object.__new__(lean.LeanCall)
    call.message = Message()  # type: ignore[assignment]
    for value in ("a\r\nSet-Cookie: x", "a\nb", "a\x00b", "a\x7f"):
        with pytest.raises(ValueError):
            lean._render(call, 200, "application/json", b"{}", {"X-Echo": value})
    done = lean._render(call, 200, "application/json", b"{}", {"X-Echo": "café"})
    assert "X-Echo: café\r\n".encode() in done.data


async def test_the_lean_switch_takes_effect_on_a_reload(engine: Engine,
                                                         lean_answers: list[str]) -> None:
    """An operator turning `[server] lean_routes` off (say, in an incident) gets aiohttp's
    path from the next request on, and the lean path back when it is turned on again."""
    missing = _request("GET", "/v1/orders/o_" + "0" * 20)
    for lean_routes, served in ((False, 0), (True, 1)):
        await _switch(engine, lean_routes)
        (answer,), _ = await _exchange(engine, missing, 1)
        assert answer[0].startswith("HTTP/1.1 404")
        assert len(lean_answers) == served
