"""Headers a client controls — a Content-Type whose parameters do not parse, a bearer key
that is not UTF-8, an Accept that refuses msgpack — get a clear 4xx or the answer they ask
for, never a 500 or a logged traceback, on the lean path and on aiohttp's alike."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from engine.http.codec import _prefers_msgpack
from tests.conftest import ADMIN_KEY, EngineFactory, codes, make_settings
from tests.test_lean_door import Raw, _exchange, _order, _request

BOTH_PATHS = pytest.mark.parametrize("lean_routes", [True, False], ids=["lean", "aiohttp"])
BROKEN_TYPES = ["application/json; a*", "application/json;a*", "text/plain; charset*"]


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


def _problem(answer: Raw, status: int, code: str) -> None:
    assert answer[0].startswith(f"HTTP/1.1 {status} "), answer
    assert answer[1]["content-type"] == "application/problem+json"
    assert json.loads(answer[2])["code"] == code


@BOTH_PATHS
async def test_a_content_type_that_does_not_parse_is_415(
        engine_factory: EngineFactory, caplog: pytest.LogCaptureFixture,
        lean_routes: bool) -> None:
    engine = await engine_factory(make_settings(server={"lean_routes": lean_routes}))
    await engine.import_codes("card-100", codes("CTYPE", 5))
    caplog.set_level(logging.ERROR)
    for broken in BROKEN_TYPES:
        for request in (
            _request("POST", "/v1/orders", _order()),
            _request("POST", "/v1/orders/batch", json.dumps(
                {"orders": [json.loads(_order())]}).encode()),
            _request("POST", "/admin/skus/card-100/stock?lot=x", b"CODE-1\n", key=ADMIN_KEY),
            _request("PUT", "/admin/config", b"{}", key=ADMIN_KEY),
        ):
            (answer,), _ = await _exchange(engine, request.replace(
                b"Content-Type: application/json", f"Content-Type: {broken}".encode()), 1)
            _problem(answer, 415, "unsupported_media_type")
    _no_tracebacks(caplog)
    # nothing imported, nothing sold: the five codes are all there is
    assert (await engine.import_codes("card-100", ["CTYPE-NEW"]))["available"] == 6


@BOTH_PATHS
async def test_a_bearer_key_that_is_not_utf8_is_401(
        engine_factory: EngineFactory, caplog: pytest.LogCaptureFixture,
        lean_routes: bool) -> None:
    engine = await engine_factory(make_settings(
        server={"lean_routes": lean_routes, "metrics_token": "m" * 40}))
    caplog.set_level(logging.ERROR)
    for path in ("/v1/orders", "/admin/skus/card-100/stock?lot=x"):
        request = _request("POST", path, _order(), key="placeholder").replace(
            b"placeholder", b"key-\xffshop")
        (answer,), _ = await _exchange(engine, request, 1)
        _problem(answer, 401, "unauthenticated")
    (answer,), _ = await _exchange(
        engine, b"GET /metrics HTTP/1.1\r\nHost: d\r\nAuthorization: Bearer \xff\r\n\r\n", 1)
    assert answer[0].startswith("HTTP/1.1 401"), answer
    _no_tracebacks(caplog)


@BOTH_PATHS
async def test_msgpack_only_for_a_client_that_accepts_it(
        engine_factory: EngineFactory, lean_routes: bool) -> None:
    engine = await engine_factory(make_settings(server={"lean_routes": lean_routes}))
    await engine.import_codes("card-100", codes("PACK", 5))
    (placed,), _ = await _exchange(engine, _request("POST", "/v1/orders", _order()), 1)
    order_path = "/v1/orders/" + json.loads(placed[2])["order_id"]
    for accept, msgpack in (
        ("application/msgpack", True),
        ("application/json, application/msgpack", True),
        ("application/json, application/msgpack;q=0", False),
        ("application/msgpack;q=0.5, application/json", False),
        ("application/msgpack, */*;q=0.1", True),
        ("application/json;q=1, application/msgpack;q=0.9", False),
        ("*/*", False),
    ):
        (answer,), _ = await _exchange(engine, _request("GET", order_path, Accept=accept), 1)
        assert answer[0] == "HTTP/1.1 200 OK", answer
        if msgpack:
            assert answer[1]["content-type"] == "application/msgpack", accept
            assert msgspec.msgpack.decode(answer[2])["status"] == "fulfilled"
        else:
            assert answer[1]["content-type"].startswith("application/json"), accept
            assert json.loads(answer[2])["status"] == "fulfilled"


@pytest.mark.parametrize("accept,wanted", [
    ("application/msgpack", True),
    ("APPLICATION/MSGPACK", True),
    ("application/msgpack;q=0", False),
    ("application/msgpack; q=0.000", False),
    ("application/msgpack;q=nonsense", False),
    ("application/json;q=0.2, application/msgpack;q=0.3", True),
    ("application/msgpack;q=0.3, application/*;q=0.5", False),
    ("application/msgpack;q=0.3, application/json;q=0.1, */*", True),
    ("text/html, application/msgpack", True),
    ("*/*", False),
])
def test_which_accept_values_get_msgpack(accept: str, wanted: bool) -> None:
    assert _prefers_msgpack(accept) is wanted
