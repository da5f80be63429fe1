"""The ceiling: an aiohttp + uvloop "hello world" POST handler (reads the body, answers JSON)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import uvloop
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"ok"}', status=201, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1,
                        help="share the port among N processes (SO_REUSEPORT), as kamigate does")
    args = parser.parse_args()
    others = [
        subprocess.Popen([sys.executable, "-m", "bench.hello_server", "--port", str(args.port)])
        for _ in range(args.processes - 1)
    ]
    app = web.Application()
    app.router.add_post("/v1/orders", hello)
    try:
        web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                    reuse_port=args.processes > 1 or None, loop=uvloop.new_event_loop())
    finally:
        for other in others:
            other.terminate()


if __name__ == "__main__":
    main()
