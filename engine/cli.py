"""The `kamigate` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from engine import __version__, commands, config, controls, demo, embedded, matching, store
from engine.cli_support import config_path, load_file, run_async, stop_processes
from engine.runtime import tune_gc

log = logging.getLogger("kamigate")


# -- config --------------------------------------------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    path = args.file or config_path(args)
    settings = load_file(path)
    print(f"{path}: ok ({len(settings.skus)} SKUs, {len(settings.storefronts)} storefronts, "
          f"sha256 {settings.sha256()[:12]})")
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    from engine import config_diff

    return config_diff.run(args.old, args.new)


# -- serve / worker / up -------------------------------------------------------------------------
def _serve(settings: config.Settings, path: str, redis_url: str | None = None,
           banner: str | None = None, reuse_port: bool = False, watch: bool = True) -> None:
    from aiohttp import web

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
    web.run_app(app, host=settings.server.host, port=settings.server.port,
                access_log=None, print=None, loop=loop, reuse_port=reuse_port or None)


def cmd_redis_acl(args: argparse.Namespace) -> int:
    from engine import redis_acl

    print("# Passwords from KAMIGATE_REDIS_PASSWORD_<ROLE> where set; put each user in the")
    print("# redis.url of its process: redis://kamigate-door:<password>@host:6379/0")
    passwords = {user: os.environ.get(
        "KAMIGATE_REDIS_PASSWORD_" + user.split("-")[1].upper(), "<password>")
        for user in redis_acl.ROLES}
    print(redis_acl.script(passwords), end="")
    return 0


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
    settings = load_file(config_path(args))
    processes = args.processes
    if processes < 1:
        print("kamigate: --processes must be at least 1", file=sys.stderr)
        return 1
    # N processes share the port (SO_REUSEPORT, the kernel spreads connections); each takes
    # 1/N of the fleet's rates, so the configured limits hold for the whole fleet.
    others = [
        subprocess.Popen([*_ENGINE, "serve", "--config",
                          config_path(args), "--reuse-port"])
        for _ in range(processes - 1)
    ]
    try:
        # One watcher per fleet host is enough: the others follow through Redis.
        _serve(settings, config_path(args), reuse_port=args.reuse_port or processes > 1,
               watch=not args.reuse_port)
    except store.StoreError as exc:
        print(f"kamigate: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_processes(*others)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from engine.worker import run_worker

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
        except store.StoreError as exc:
            print(f"kamigate: {exc}", file=sys.stderr)
            return 1
        return 0

    return run_async(main)


def _start_worker(config_path: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*_ENGINE, "worker", "--config", config_path]
    )


def cmd_up(args: argparse.Namespace) -> int:
    _hold_sighup()
    path = config_path(args)
    if args.demo and not Path(path).exists():
        path = str(demo.write_config(".kamigate", args.port or 8080))
    settings = load_file(path)
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
    base = settings.server.public_url
    banner = f"kamigate {__version__} listening on {base}; {matching.describe()}"
    if args.demo:
        banner += "\n\n" + demo.curl_lines(base) + "\n"
    try:
        _serve(settings, path, url, banner)
    finally:
        stop_processes(worker)
        if redis_process is not None:
            redis_process.stop()
    return 0


async def _load_demo_stock(settings: config.Settings, url: str) -> int:
    from engine import stock
    from engine.directory import Directory

    redis = await store.connect(url)
    try:
        for level in await stock.levels(redis, settings.redis.shards, demo.SKUS):
            want = demo.SKUS[level.sku]
            if level.imported == 0:
                importer = stock.Importer(redis, settings.redis.shards, level.sku, "demo", 0,
                                          sealer=Directory(settings).sealer)
                await importer.feed(demo.codes(level.sku, want))
                result = await importer.finish()
                print(f"demo stock: {result.added} codes for {level.sku}", flush=True)
    finally:
        await redis.aclose()
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kamigate", description=__doc__)
    top.add_argument("--version", action="version", version=f"kamigate {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $KAMIGATE_CONFIG, ./kamigate.toml)")
    sub = top.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", parents=[common], help="Redis (embedded), front door and worker")
    up.add_argument("--demo", action="store_true", help="demo storefront, SKUs and stock")
    up.add_argument("--port", type=int, help="port for the demo config (default 8080)")
    up.set_defaults(func=cmd_up)
    serve = sub.add_parser("serve", parents=[common], help="the HTTP front door")
    serve.add_argument("--processes", type=int, default=1,
                       help="front-door processes sharing the port (SO_REUSEPORT)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)
    worker = sub.add_parser("worker", parents=[common], help="stream workers")
    worker.set_defaults(func=cmd_worker)

    stock_cmd = sub.add_parser("stock", help="stock operations")
    stock_sub = stock_cmd.add_subparsers(dest="stock_command", required=True)
    imp = stock_sub.add_parser("import", parents=[common], help="bulk import codes from a file")
    imp.add_argument("sku")
    imp.add_argument("file", help="one code per line (.txt) or code[,expires_at] (.csv)")
    imp.add_argument("--lot")
    imp.add_argument("--expires-at")
    imp.set_defaults(func=commands.cmd_stock_import)

    cfg = sub.add_parser("config", help="config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    check = cfg_sub.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_config_check)
    diff = cfg_sub.add_parser("diff", help="what changes between two config files, and "
                              "whether a live reload can apply it")
    diff.add_argument("old")
    diff.add_argument("new")
    diff.set_defaults(func=cmd_config_diff)

    maint = sub.add_parser("maintenance", parents=[common],
                           help="close order writes (read_only), everything (full), or reopen")
    maint.add_argument("mode", choices=["off", "read_only", "full"])
    maint.add_argument("--reason", help="shown to storefronts and buyers")
    maint.add_argument("--eta", help="when it ends (RFC 3339); sets Retry-After")
    maint.add_argument("--starts-at", help="schedule it (RFC 3339); announced beforehand")
    maint.add_argument("--scope", default="global",
                       help="global (default), storefront:<id> or sku:<id>")
    maint.set_defaults(func=controls.cmd_maintenance)
    pause = sub.add_parser("pause", parents=[common],
                           help="pause automatic delivery for a scope (orders queue meanwhile)")
    pause.add_argument("scope", help="global, storefront:<id> or sku:<id>")
    pause.add_argument("--reason", default="", help="shown to buyers")
    pause.add_argument("--until", help="when it ends by itself (RFC 3339)")
    pause.add_argument("--action", choices=["queue", "reject"], default="queue",
                       help="what orders for the scope get meanwhile")
    pause.set_defaults(func=controls.cmd_pause)
    resume = sub.add_parser("resume", parents=[common],
                            help="resume automatic delivery for a scope; the line is served")
    resume.add_argument("scope")
    resume.set_defaults(func=controls.cmd_resume)
    key_cmd = sub.add_parser("keys", help="keys that seal codes at rest ([codes])")
    key_sub = key_cmd.add_subparsers(dest="keys_command", required=True)
    key_sub.add_parser("new", help="print a new random key").set_defaults(
        func=controls.cmd_keys_new)
    key_sub.add_parser("rotate", parents=[common],
                       help="reseal the stock with [codes] current, online").set_defaults(
        func=controls.cmd_keys_rotate)
    acl = sub.add_parser("redis-acl", help="print least-privilege Redis users (ACL SETUSER "
                         "lines) for the front door, the worker and the operator")
    acl.set_defaults(func=cmd_redis_acl)
    rec = sub.add_parser("reconcile", parents=[common], help="check stock invariants")
    rec.set_defaults(func=commands.cmd_reconcile)
    status = sub.add_parser("status", parents=[common], help="SKUs, stock and queues")
    status.set_defaults(func=commands.cmd_status)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("KAMIGATE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
