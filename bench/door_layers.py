"""What each layer of the overload answer costs in the front door.

Starts the real front door (its app, middleware and config: a global rate of 1/s and a line of
100, so POST /v1/orders answers 429 after the first few) with four extra routes that stop after
one more layer each, and drives the ceiling and every route with the same wrk command:

  /bench/hello      the ceiling's handler, inside kamigate's app and middleware
  /bench/auth       + bearer authentication and body decoding
  /bench/placement  + placement (block list, five buckets, pauses, review, line check)
  /bench/problem    auth and decoding, then the 429 problem document (no placement)
  /v1/orders        the real route: all of it

Prints requests/s and the door's CPU µs per request (median of rounds).
Usage:  python -m bench.door_layers [--seconds 3] [--rounds 3]   (needs wrk)
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import uvloop
from aiohttp import web

from bench.e2e import _config, _process, cpu_seconds, wrk
from engine import config, errors
from engine.http.app import create_app
from engine.http.auth import storefront_of
from engine.http.codec import decode_body
from engine.http.placement import placement
from engine.http.state import DIRECTORY
from engine.store.embedded import RedisProcess, free_port
from engine.wire import ORDER_REQUEST

OVERLOADED = "[limits]\nglobal = { rate = 1, burst = 1 }\n[waiting_room]\ncapacity = 100\n"
ROUTES = ("/bench/hello", "/bench/auth", "/bench/placement", "/bench/problem", "/v1/orders")
HELLO = b'{"status":"ok"}'


async def hello(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=HELLO, status=201, content_type="application/json")


async def auth(request: web.Request) -> web.Response:
    await storefront_of(request, request.app[DIRECTORY].current)
    await decode_body(request, ORDER_REQUEST)
    return web.Response(body=HELLO, status=201, content_type="application/json")


async def placed(request: web.Request) -> web.Response:
    storefront = await storefront_of(request, request.app[DIRECTORY].current)
    req = await decode_body(request, ORDER_REQUEST)
    with contextlib.suppress(errors.Problem):  # the placement is what is timed, not its answer
        placement(request.app, storefront, req, None)
    return web.Response(body=HELLO, status=201, content_type="application/json")


async def problem(request: web.Request) -> web.Response:
    await storefront_of(request, request.app[DIRECTORY].current)
    await decode_body(request, ORDER_REQUEST)
    answer = errors.RateLimited("over capacity and the waiting line is full; retry later",
                                retry_after=1)
    answer.extra_headers = {"RateLimit-Policy": '"orders";q=1;w=1', "RateLimit": '"orders";r=0;t=1'}
    raise answer


def serve(port: int, redis_url: str, data_dir: str) -> None:
    settings = config.load(_config(Path(data_dir), port, redis_url, OVERLOADED))
    app = create_app(settings, redis_url=redis_url, watch_config=False)
    for path, handler in zip(ROUTES, (hello, auth, placed, problem), strict=False):
        app.router.add_post(path, handler)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


def drive(port: int, path: str, seconds: int, pid: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request of `pid`) for one wrk run against `path`."""
    before = cpu_seconds(pid)
    run = wrk(port, seconds, 64, path)
    return run["rps"], (cpu_seconds(pid) - before) * 1e6 / run["requests"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)  # port, redis url, dir
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return 0
    results: dict[str, list[tuple[float, float]]] = {"ceiling": []}
    results.update({path: [] for path in ROUTES})
    with tempfile.TemporaryDirectory(prefix="kg-layers-") as tmp:
        redis = RedisProcess(Path(tmp) / "redis")
        redis.start()
        port, hello_port = free_port(), free_port()
        try:
            with _process([sys.executable, "-m", "bench.door_layers", "--serve", str(port),
                           redis.url, tmp], port) as door, \
                    _process([sys.executable, "-m", "bench.hello_server", "--port",
                              str(hello_port)], hello_port) as ceiling:
                for r in range(args.rounds):
                    results["ceiling"].append(drive(hello_port, "/v1/orders", args.seconds,
                                                    ceiling.pid))
                    for path in ROUTES:
                        results[path].append(drive(port, path, args.seconds, door.pid))
                    print(f"round {r + 1} done", flush=True)
        finally:
            redis.stop()
    med = statistics.median
    print(f"\n{'route':<20}{'requests/s':>12}{'CPU us/req':>12}{'vs ceiling':>12}")
    ceiling_rate = med(x[0] for x in results["ceiling"])
    for name, runs in results.items():
        rate = med(x[0] for x in runs)
        print(f"{name:<20}{rate:>12.0f}{med(x[1] for x in runs):>12.1f}"
              f"{rate / ceiling_rate:>12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
