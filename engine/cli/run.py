"""`kamigate up`, `serve` and `worker`: the long-running processes, and how they are tuned."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine import __version__, config
from engine.cli import demo
from engine.cli.support import (
    DEMO_CONFIG,
    config_path,
    load_file,
    port_in_use,
    run_async,
    stop_processes,
)
from engine.clock import now_ms
from engine.config.directory import Directory
from engine.stock.importer import Importer
from engine.stock.lots import levels
from engine.store import connection, embedded
from engine.wallet import ledger
from engine.worker import matching

log = logging.getLogger("kamigate")


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    up = commands.add_parser("up", parents=[common],
                             help="Redis (embedded), front door and worker")
    up.add_argument("--demo", action="store_true", help="demo storefront, SKUs and stock")
    up.add_argument("--port", type=int, help="port for the demo config (default 8080)")
    up.add_argument("--processes", type=int, default=None, help=PROCESSES_HELP)
    up.set_defaults(func=cmd_up)
    serve = commands.add_parser("serve", parents=[common], help="the HTTP front door")
    serve.add_argument("--processes", type=int, default=None, help=PROCESSES_HELP)
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    worker = commands.add_parser("worker", parents=[common], help="stream workers")
    worker.set_defaults(func=cmd_worker)


MAX_DEFAULT_DOORS = 8
PROCESSES_HELP = ("front-door processes sharing the port (SO_REUSEPORT); default: one per "
                  f"usable core, at most {MAX_DEFAULT_DOORS}")


def default_doors() -> int:
    """One front door per core this process may run on, at most MAX_DEFAULT_DOORS: the door
    is the stage that saturates first, and on two cores two doors answer an overload 1.5x
    faster than one (PERFORMANCE.md §3). Past eight, one Redis saturates first (§8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_DEFAULT_DOORS))


def _door_count(args: argparse.Namespace) -> int | None:
    """--processes, or the default; None (and the reason printed) when it is not usable."""
    processes: int = default_doors() if args.processes is None else args.processes
    if processes < 1:
        print("kamigate: --processes must be at least 1", file=sys.stderr)
        return None
    return processes


PR_SET_PDEATHSIG = 1


def _end_with_parent() -> None:
    """A door started by another (--reuse-port) ends when that one does, even SIGKILLed:
    otherwise it would keep serving the port alone (Linux: prctl PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        raise SystemExit(0)


def _more_doors(path: str, processes: int) -> list[subprocess.Popen[bytes]]:
    """The front doors beyond the first, each sharing the port; each takes 1/N of the
    fleet's rates, so the configured limits hold for the whole fleet."""
    return [subprocess.Popen([*_ENGINE, "serve", "--config", path, "--reuse-port"])
            for _ in range(processes - 1)]


GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Fewer, later collections: every request allocates short-lived objects that die young.

    Objects alive at start-up (modules, config, compiled decoders) are moved out of the
    collector's view with gc.freeze(), so a collection walks only what the traffic made.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


def _serve(settings: config.Settings, path: str, redis_url: str | None = None,
           banner: str | None = None, reuse_port: bool = False, watch: bool = True) -> None:
    from aiohttp import web

    from engine.http import serving
    from engine.http.app import create_app

    app = create_app(settings, redis_url, config_file=path, watch_config=watch)

    async def settle_gc(_: web.Application) -> None:
        tune_gc()

    app.on_startup.append(settle_gc)
    if banner:
        async def show(_: web.Application) -> None:
            print(banner, flush=True)
        app.on_startup.append(show)
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a dependency where it exists
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # a sale spike opens thousands of connections at once: aiohttp's default backlog (128)
    # would leave most of them unaccepted for seconds (the kernel caps it at somaxconn)
    serving.run(app, loop, settings.server.host, settings.server.port,
                backlog=settings.server.backlog, reuse_port=reuse_port)


# -P: the child imports the installed engine (with its compiled kernel), never a source
# tree that happens to be the working directory.
_ENGINE = [sys.executable, "-P", "-m", "engine"]


def _hold_sighup() -> None:
    """A SIGHUP (reload) that arrives before the event loop's handler is in place must not
    kill the process, which is the default action."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def cmd_serve(args: argparse.Namespace) -> int:
    _hold_sighup()
    if args.reuse_port:
        _end_with_parent()
    processes = 1 if args.reuse_port else _door_count(args)
    if processes is None:
        return 1
    settings = load_file(config_path(args))
    if not args.reuse_port and _port_taken(settings, "set server.port in the config"):
        return 1
    others = _more_doors(config_path(args), processes)
    try:
        # One watcher per fleet host is enough: the others follow through Redis.
        _serve(settings, config_path(args), reuse_port=args.reuse_port or processes > 1,
               watch=not args.reuse_port)
    except connection.StoreError as exc:
        print(f"kamigate: {exc}", file=sys.stderr)
        return 1
    except config.ConfigError as exc:
        return _refused(exc)
    except OSError as exc:  # taken between the check and the bind
        if exc.errno != errno.EADDRINUSE:
            raise
        _port_taken(settings, "set server.port in the config", known=True)
        return 1
    finally:
        stop_processes(*others)
    return 0


def _refused(exc: config.ConfigError) -> int:
    """The config cannot run on this fleet's store (it would break a promise): say why."""
    print("kamigate: the config was not applied:", file=sys.stderr)
    for error in exc.errors:
        print(f"  - {error}", file=sys.stderr)
    return 1


def _port_taken(settings: config.Settings, remedy: str, known: bool = False) -> bool:
    """Say so (and how to pick another) when the listening port is in use."""
    host, port = settings.server.host, settings.server.port
    if not known and not port_in_use(host, port):
        return False
    print(f"kamigate: port {port} is in use on {host}; {remedy}", file=sys.stderr)
    return True


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.worker.consumer import run_worker

    _hold_sighup()
    settings = load_file(config_path(args))
    print(matching.describe(), flush=True)

    async def main() -> int:
        tune_gc()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await run_worker(settings, stop, config_path(args))
        except connection.StoreError as exc:
            print(f"kamigate: {exc}", file=sys.stderr)
            return 1
        except config.ConfigError as exc:
            return _refused(exc)
        return 0

    return run_async(main)


def _start_worker(config_path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*_ENGINE, "worker", "--config", config_path]
    )


def cmd_up(args: argparse.Namespace) -> int:
    _hold_sighup()
    path = config_path(args)
    if args.demo and (path == DEMO_CONFIG or not Path(path).exists()):
        path = str(demo.write_config(str(Path(DEMO_CONFIG).parent), args.port or 8080))
    processes = _door_count(args)
    if processes is None:
        return 1
    settings = load_file(path)
    if _port_taken(settings, "pass --port N" if args.demo else "set server.port in the config"):
        return 1
    redis_process = None
    url = settings.redis.url
    if url == "embedded":
        url = embedded.running_url(settings.redis.data_dir) or ""
        if not url:
            redis_process = embedded.RedisProcess(settings.redis.data_dir,
                                                  appendfsync=settings.redis.appendfsync)
            try:
                redis_process.start()
            except embedded.EmbeddedError as exc:
                print(f"kamigate: {exc}", file=sys.stderr)
                return 1
            url = redis_process.url
            print(f"embedded Redis: {url} (AOF {settings.redis.appendfsync}, data in "
                  f"{Path(settings.redis.data_dir).resolve()})", flush=True)
    if args.demo:
        run_async(lambda: _load_demo_stock(settings, url))
    worker = _start_worker(path)
    others = _more_doors(path, processes)
    base = settings.server.public_url
    banner = (f"kamigate {__version__} listening on {base} ({processes} front-door "
              f"process{'es' if processes > 1 else ''}); {matching.describe()}")
    if args.demo:
        banner += ("\n\n" + demo.curl_lines(base) + "\n# from this directory, `kamigate status`"
                   f", `reconcile`, `pause` ... use {path}\n")
    try:
        _serve(settings, path, url, banner, reuse_port=processes > 1)
    except config.ConfigError as exc:
        return _refused(exc)
    except OSError as exc:  # taken between the check and the bind
        if exc.errno != errno.EADDRINUSE:
            raise
        _port_taken(settings, "pass --port N", known=True)
        return 1
    finally:
        stop_processes(*others, worker)
        if redis_process is not None:
            redis_process.stop()
    return 0


async def _load_demo_stock(settings: config.Settings, url: str) -> int:
    redis = await connection.connect(url)
    try:
        for level in await levels(redis, settings.redis.shards, demo.SKUS):
            want = demo.SKUS[level.sku]
            if level.imported == 0:
                intake = Importer(redis, settings.redis.shards, level.sku, "demo", 0,
                                  sealer=Directory(settings).sealer)
                await intake.feed(demo.codes(level.sku, want))
                result = await intake.finish()
                print(f"demo stock: {result.added} codes for {level.sku}", flush=True)
        outcome, _, balance = await ledger.move(
            redis, settings.redis.shards, "demo-shop", demo.BUYER, demo.WELCOME_POINTS, "grant",
            "welcome", 0, now_ms(), key="demo-welcome", digest="demo-welcome")
        if outcome == "ok":
            print(f"demo points: {demo.WELCOME_POINTS} for {demo.BUYER} (balance {balance})",
                  flush=True)
    finally:
        await redis.aclose()
    return 0
