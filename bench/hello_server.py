"""The ceiling: an aiohttp + uvloop "hello world" POST handler (reads the body, answers JSON)."""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b'{"status":"ok"}', status=201, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/orders", hello)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
