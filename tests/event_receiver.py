"""A storefront's events endpoint for tests: a real HTTP server on loopback that records
every event it is sent and checks its signature (the `receiver` fixture)."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

SECRET = "whsec-events-secret-of-32-characters"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventReceiver:
    """A storefront's events endpoint: records every event and checks its signature."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.calls = 0
        self.events: list[dict[str, Any]] = []
        self.names: list[str] = []
        self.signatures_ok = True

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls += 1
        if self.calls <= self.failures:
            return web.Response(status=503)
        parts = dict(p.split("=", 1) for p in request.headers["Kamigate-Signature"].split(","))
        expected = hmac.new(SECRET.encode(), f"{parts['t']}.".encode() + body,
                            hashlib.sha256).hexdigest()
        self.signatures_ok &= hmac.compare_digest(parts["v1"], expected)
        self.names.append(request.headers["Kamigate-Event"])
        self.events.append(json.loads(body))
        return web.Response(status=204)

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == name]


@contextlib.asynccontextmanager
async def serving(path: str, handler: Handler) -> AsyncIterator[str]:
    """A real HTTP server on loopback answering POST `path`; its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    server = TestServer(app)
    await server.start_server()
    try:
        yield str(server.make_url(path))
    finally:
        await server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[EventReceiver, str]]:
    events = EventReceiver()
    async with serving("/events", events.handle) as url:
        yield events, url
