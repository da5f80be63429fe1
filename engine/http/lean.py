"""The lean door: the order routes that carry a sale spike (POST /v1/orders, POST
/v1/orders/batch, GET /v1/orders/{id}) served without aiohttp's Request and Response objects.

aiohttp still owns every connection: parsing, keep-alive, pipelining (one request at a time,
answers in order), flow control, lingering and timeouts. Its Server builds each request with
a factory and hands it to a handler; `install` wraps both. A request of a lean route becomes a
LeanCall (the members a route reads, see engine.http.incoming), the same route function runs,
and the answer's bytes are built and written in one go. Everything else, and any request a
lean route would treat differently (`Expect: 100-continue`, an upgrade, a query string), takes
aiohttp's path unchanged. The promises every answer keeps are the middleware's own functions
(engine.http.problems): maintenance and breaker checks, problem documents, RateLimit headers,
notices, latency metrics.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast

from aiohttp import StreamReader, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import parse_content_type
from aiohttp.http import SERVER_SOFTWARE, HttpVersion10, HttpVersion11, RawRequestMessage
from multidict import CIMultiDictProxy

from engine import errors
from engine.http import orders
from engine.http.codec import encode_body
from engine.http.guards import BREAKER
from engine.http.incoming import Answer, Incoming
from engine.http.problems import failure, refusal, settle_headers, too_large
from engine.http.state import DIRECTORY, METRICS
from engine.wire import json_encode

Core = Callable[[Incoming], Awaitable[Answer]]
_ORDER_PATH = re.compile(rf"/v1/orders/({orders.ORDER_ID})")
_STATUS_LINES = {
    (version, s.value): f"HTTP/{version[0]}.{version[1]} {s.value} {s.phrase}\r\n".encode()
    for version in (HttpVersion10, HttpVersion11) for s in HTTPStatus
}
_HEAD = f"Server: {SERVER_SOFTWARE}\r\n".encode()
_FORBIDDEN_IN_HEADERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # as aiohttp refuses them
WRITE_BUFFER_LIMIT = 64 * 1024  # answers not yet taken by the client, per connection
log = logging.getLogger("kamigate.http")


class LeanCall:
    """One request of a lean route: what the route reads (Incoming), and what aiohttp's
    connection handler asks of a request (_finish, _cancel, _task)."""

    __slots__ = ("_body", "_task", "app", "content", "core", "headers", "match_info",
                 "message", "method", "name", "path", "protocol", "writer")

    def __init__(self, app: web.Application, core: Core, name: str, match_info: dict[str, str],
                 message: RawRequestMessage, payload: StreamReader, protocol: Any,
                 writer: AbstractStreamWriter, task: asyncio.Task[None]) -> None:
        self.app, self.core, self.name, self.match_info = app, core, name, match_info
        self.message, self.method, self.path = message, message.method, message.path
        self.headers: CIMultiDictProxy[str] = message.headers
        self.content, self.protocol, self.writer, self._task = payload, protocol, writer, task
        self._body: bytes | None = None

    @property
    def path_qs(self) -> str:
        return self.path  # a request with a query string takes aiohttp's path

    @property
    def content_type(self) -> str:
        return _content_type(self.headers.get("Content-Type"))

    async def read(self) -> bytes:
        """The whole body (kept: a signature and the decoder both read it), at most
        server.max_body_bytes (413)."""
        if self._body is None:
            limit = self.app[DIRECTORY].current.settings.server.max_body_bytes
            declared = self.headers.get("Content-Length")
            if declared is not None and int(declared) > limit:
                raise too_large(self.app)
            # chunked or compressed: the declared length is not what is read
            if self.content.is_eof():  # all of it came with the headers: the usual case
                body = self.content.read_nowait(-1)
                if len(body) > limit:
                    raise too_large(self.app)
            else:
                parts = bytearray()
                while chunk := await self.content.readany():  # b"" once all is read
                    parts += chunk
                    if len(parts) > limit:
                        raise too_large(self.app)
                body = bytes(parts)
            self._body = body
        return self._body

    def _finish(self) -> None:
        pass

    def _cancel(self, exc: BaseException) -> None:
        self.content.set_exception(exc)  # the client left: a read still waiting ends


_CONTENT_TYPES: dict[str | None, str] = {None: "application/octet-stream"}


def _content_type(raw: str | None) -> str:
    """As aiohttp reads it (an email-header parse, slow): remembered per header value."""
    found = _CONTENT_TYPES.get(raw)
    if found is None:
        assert raw is not None
        found = parse_content_type(raw)[0]
        if len(_CONTENT_TYPES) > 256:  # storefronts send a handful of spellings
            _CONTENT_TYPES.clear()
            _CONTENT_TYPES[None] = "application/octet-stream"
        _CONTENT_TYPES[raw] = found
    return found


class LeanResponse:
    """A whole answer's bytes, written when aiohttp's connection handler prepares it."""

    __slots__ = ("data", "keep_alive")

    def __init__(self, data: bytes, keep_alive: bool) -> None:
        self.data, self.keep_alive = data, keep_alive

    async def prepare(self, request: LeanCall) -> None:
        transport = request.protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client left before its answer")
        transport.write(self.data)
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            await request.writer.drain()  # a client that sends but never reads waits

    async def write_eof(self) -> None:
        pass


def lean_route(message: RawRequestMessage) -> tuple[Core, str, dict[str, str]] | None:
    """(route, its name in the latency metrics, match info) when the lean door serves this
    request, else None."""
    method, path = message.method, message.path
    if method == "POST":
        name = path
    elif method == "GET" and (found := _ORDER_PATH.fullmatch(path)) is not None:
        name, match_info = "/v1/orders/{order_id}", {"order_id": found.group(1)}
    else:
        return None
    core = orders.LEAN_ROUTES.get((method, name))
    if core is None or message.upgrade or "Expect" in message.headers:
        return None
    return core, name, match_info if method == "GET" else {}


async def answer(call: LeanCall) -> LeanResponse:
    """What problems_middleware and codec.respond do for aiohttp's requests, in one pass.
    Never raises: aiohttp's own error answer needs a Request, so a reply always goes out."""
    started = time.perf_counter()
    try:
        return await _answer(call)
    except Exception:
        log.exception("unexpected error answering %s %s", call.method, call.path)
        return _render(call, 500, errors.PROBLEM_JSON, _INTERNAL, {})
    finally:
        call.app[METRICS].door.latency.observe(call.name, time.perf_counter() - started)


_INTERNAL = json_encode(errors.Internal("unexpected error").body())


async def _answer(call: LeanCall) -> LeanResponse:
    app = call.app
    problem = refusal(app, call.method, call.path)
    if problem is not None:  # answered before any route runs, as the middleware does
        return _render(call, problem.status, errors.PROBLEM_JSON, json_encode(problem.body()),
                       problem.headers())
    try:
        status, body, route_headers = await call.core(call)
        app[BREAKER].success()
        data, ctype = encode_body(call, body)
        headers = dict(route_headers)  # may be the one mapping unlimited answers share
        settle_headers(app, call.path, headers)
        return _render(call, status, ctype, data, headers)
    except Exception as exc:  # every failure becomes a problem document
        problem = failure(app, call.method, call.path, exc)
        headers = problem.headers()
        settle_headers(app, call.path, headers)
        return _render(call, problem.status, errors.PROBLEM_JSON, json_encode(problem.body()),
                       headers)


def _render(call: LeanCall, status: int, ctype: str, body: bytes,
            headers: Mapping[str, str]) -> LeanResponse:
    """The status line, aiohttp's own headers (Content-Type, Content-Length, Date, Server,
    Connection as the version needs) and the route's, then the body."""
    message = call.message
    keep_alive = not message.should_close
    version = message.version
    lines = [f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
             f"Date: {_date()}\r\n"]
    if _FORBIDDEN_IN_HEADERS.search("".join(headers) + "".join(headers.values())):
        raise ValueError("a control character in a header would split the answer")
    lines += [f"{name}: {value}\r\n" for name, value in headers.items()]
    if not keep_alive and version == HttpVersion11:
        lines.append("Connection: close\r\n")
    elif keep_alive and version == HttpVersion10:
        lines.append("Connection: keep-alive\r\n")
    lines.append("\r\n")
    status_line = _STATUS_LINES.get((version, status)) or _STATUS_LINES[(HttpVersion11, status)]
    return LeanResponse(b"".join((status_line, _HEAD, "".join(lines).encode(), body)),
                        keep_alive)


_DATE: list[Any] = [0, ""]


def _date() -> str:
    """The Date header, formatted once a second."""
    now = int(time.time())
    if _DATE[0] != now:
        _DATE[0], _DATE[1] = now, formatdate(now, usegmt=True)
    return cast(str, _DATE[1])


RequestFactory = Callable[..., web.BaseRequest]


def install(app: web.Application, server: web.Server) -> None:
    """Let `server` (aiohttp's, serving `app`) answer the lean routes the lean way."""
    make_request: RequestFactory = server.request_factory
    handle = server.request_handler
    directory = app[DIRECTORY]  # the live config: `[server] lean_routes` may be reloaded

    def request_factory(message: RawRequestMessage, payload: StreamReader, protocol: Any,
                        writer: AbstractStreamWriter, task: asyncio.Task[None]
                        ) -> web.BaseRequest:
        found = lean_route(message) if directory.current.settings.server.lean_routes else None
        if found is None:
            return make_request(message, payload, protocol, writer, task)
        return cast(web.BaseRequest, LeanCall(app, *found, message, payload, protocol, writer,
                                              task))

    async def request_handler(request: web.BaseRequest) -> web.StreamResponse:
        if isinstance(request, LeanCall):
            return cast(web.StreamResponse, await answer(request))
        return await handle(request)

    server.request_factory = request_factory
    server.request_handler = request_handler
