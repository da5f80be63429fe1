"""Slow clients and oversize bodies are cut off without hurting other clients."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    EngineFactory,
    codes,
    make_settings,
)


async def _stall(host: str, port: int, path: str, key: str, ctype: str) -> tuple[bytes, float]:
    """Send the headers and half the body, then nothing: what comes back, and when."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    writer.write(f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: {ctype}\r\nContent-Length: 200\r\n\r\n".encode()
                 + b'{"sku": "card-100", ')
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    return answer, time.monotonic() - started


async def test_a_stalled_body_is_cut_off_while_others_are_served(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(server={"body_timeout_s": 1.0}))
    await engine.import_codes("card-100", codes("SLOW", 50))
    server = engine.http.server
    host, port = str(server.host), int(server.port or 0)
    stalled = [asyncio.create_task(_stall(host, port, "/v1/orders", SHOP_A_KEY,
                                          "application/json")) for _ in range(20)]
    stalled.append(asyncio.create_task(_stall(host, port, "/admin/skus/card-100/stock",
                                              OPERATOR_KEY, "text/plain")))
    started = time.monotonic()
    for i in range(20):  # ordinary buyers meanwhile: answered at once
        status, _ = await engine.order(buyer=f"fast-{i}")
        assert status == 201
    assert time.monotonic() - started < 1.0
    for answer, took in await asyncio.gather(*stalled):
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert b"application/problem+json" in answer and b"request_timeout" in answer
        assert 0.9 < took < 5
    level = await (await engine.http.get("/admin/skus/card-100",
                                         headers={"Authorization": "Bearer key-viewer"})).json()
    assert level["imported"] == 50  # the stalled import wrote nothing


async def test_an_oversize_body_is_refused_before_it_is_read(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(server={"max_body_bytes": 4096}))
    resp = await engine.http.post("/v1/orders", data=b"x" * 100_000, headers={
        "Authorization": f"Bearer {SHOP_A_KEY}", "Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    status, _ = await engine.order(buyer="after")
    assert status in (201, 202, 409)
