"""Running the front door: aiohttp's runner with the lean order routes installed
(engine.http.lean), on a TCP port until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from engine.http import lean

KEEPALIVE_S = 75.0  # an idle keep-alive connection is closed after this (as web.run_app)


class DoorRunner(web.AppRunner):
    """AppRunner whose server answers the lean routes without aiohttp's Request and
    Response (while `[server] lean_routes` is on: a reload switches it). Never with an
    access log: it would need a Request, and kamigate logs no request line (a URL may
    carry a page token)."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        super().__init__(app, **{**kwargs, "access_log": None})

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        lean.install(self.app, server)
        return server


def run(app: web.Application, loop: asyncio.AbstractEventLoop, host: str, port: int,
        backlog: int, reuse_port: bool) -> None:
    """Serve `app` on host:port until a signal; then close it as web.run_app does (its
    cleanup contexts run, the tasks left are cancelled, the loop closed)."""
    runner = DoorRunner(app, handle_signals=True, keepalive_timeout=KEEPALIVE_S)

    async def serve() -> None:
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, backlog=backlog,
                              reuse_port=reuse_port or None).start()
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        left = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in left:
            task.cancel()
        if left:
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
