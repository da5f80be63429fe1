"""What aiohttp's request cycle costs: the same hello-world POST answered three ways.

  app   a web.Application with one route (the ceiling of bench.e2e)
  low   aiohttp's low-level web.Server: no application, router or middleware
  lean  aiohttp's Server with a request factory and a response that writes its own bytes:
        how the lean door (engine.http.lean) serves its routes, aiohttp keeping the connection
  raw   an asyncio Protocol on aiohttp's C request parser that writes prebuilt bytes: what is
        left when the answer needs no Request or Response object (keep-alive only; the size
        of the lever a lean door path could reach, not a server to run)

Each runs in its own process; `wrk -t1 -c64` drives them in turn (the order rotates every
round); prints answers/s and the server's CPU µs per request, medians of the rounds.
Usage:  python -m bench.http_cycle [--rounds 6] [--seconds 3]   (needs wrk)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
from typing import Any, cast

import uvloop
from aiohttp import web
from aiohttp.http_parser import HttpRequestParser

from bench.e2e import _wait_port, cpu_seconds, wrk
from engine.store.embedded import free_port

KINDS = ("app", "low", "lean", "raw")
ANSWER = (b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
          b"Content-Length: 15\r\n\r\n{\"status\":\"ok\"}")


async def hello(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"ok"}', status=201, content_type="application/json")


class LeanHello:
    """What engine.http.lean's request factory makes: no Request object."""

    __slots__ = ("_task", "payload", "protocol")

    def __init__(self, message: Any, payload: Any, protocol: Any, writer: Any, task: Any
                 ) -> None:
        self.payload, self.protocol, self._task = payload, protocol, task

    def _finish(self) -> None:
        pass

    def _cancel(self, exc: BaseException) -> None:
        pass


class LeanAnswer:
    keep_alive = True

    async def prepare(self, request: LeanHello) -> None:
        request.protocol.transport.write(ANSWER)

    async def write_eof(self) -> None:
        pass


async def lean_hello(request: Any) -> Any:
    request.payload.read_nowait(-1)
    return LeanAnswer()


class RawHello(asyncio.Protocol):
    """Parses each request (aiohttp's C parser, bodies included) and answers from bytes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.parser = HttpRequestParser(self, asyncio.get_running_loop(), 2**16)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        messages, _, _ = self.parser.feed_data(data)
        for _ in messages:
            self.transport.write(ANSWER)

    # what the parser's body streams call on the protocol that feeds them
    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


async def serve(kind: str, port: int) -> None:
    if kind == "raw":
        await asyncio.get_running_loop().create_server(RawHello, "127.0.0.1", port)
    else:
        if kind == "lean":
            runner: web.BaseRunner[Any] = web.ServerRunner(web.Server(
                lean_hello, request_factory=LeanHello, access_log=None))
        elif kind == "app":
            app = web.Application()
            app.router.add_post("/v1/orders", hello)
            runner = web.AppRunner(app, access_log=None)
        else:
            runner = web.ServerRunner(web.Server(hello, access_log=None))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def measure(rounds: int, seconds: int) -> dict[str, dict[str, float]]:
    servers: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
    rows: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    try:
        for kind in KINDS:
            port = free_port()
            servers[kind] = (port, subprocess.Popen(
                [sys.executable, "-m", "bench.http_cycle", "--serve", kind, "--port", str(port)]))
            _wait_port(port)
        for r in range(rounds):
            for kind in KINDS[r % len(KINDS):] + KINDS[:r % len(KINDS)]:
                port, proc = servers[kind]
                before = cpu_seconds(proc.pid)
                run = wrk(port, seconds, 64)
                used = cpu_seconds(proc.pid) - before
                rows[kind].append((run["rps"], used * 1e6 / max(run["requests"], 1)))
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(10)
    return {kind: {"answers_s": round(statistics.median(x[0] for x in found)),
                   "cpu_us": round(statistics.median(x[1] for x in found), 1)}
            for kind, found in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--serve", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(args.serve, args.port))
        return 0
    for kind, found in measure(args.rounds, args.seconds).items():
        print(f"{kind:<4} {found['answers_s']:>8}/s {found['cpu_us']:>8} µs CPU per request")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
