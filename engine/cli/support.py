"""What every kamigate command shares: finding and loading the config, running async code,
reaching the store, stopping child processes."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from redis.asyncio import Redis

from engine import config
from engine.store import connection

DEFAULT_CONFIG = "kamigate.toml"
DEMO_CONFIG = ".kamigate/demo.toml"  # what `kamigate up --demo` writes


def config_path(args: argparse.Namespace) -> str:
    """--config, else $KAMIGATE_CONFIG, else ./kamigate.toml; where there is none, the demo
    config `kamigate up --demo` wrote here (so `status`, `pause`... follow the demo)."""
    chosen = args.config or os.environ.get("KAMIGATE_CONFIG")
    if chosen:
        return str(chosen)
    if not os.path.exists(DEFAULT_CONFIG) and os.path.exists(DEMO_CONFIG):
        print(f"kamigate: no {DEFAULT_CONFIG} here; using the demo config {DEMO_CONFIG}",
              file=sys.stderr)
        return DEMO_CONFIG
    return DEFAULT_CONFIG


def port_in_use(host: str, port: int) -> bool:
    """Another process listens on host:port (checked before anything is started)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def load_file(path: str) -> config.Settings:
    found = try_load(path)
    if found is None:
        raise SystemExit(1)
    return found


def try_load(path: str) -> config.Settings | None:
    """The config in a file, or None after listing every error by key on stderr."""
    try:
        return config.load(path)
    except config.ConfigError as exc:
        print(f"kamigate: {path} is not a usable config:", file=sys.stderr)
        for error in exc.errors:
            print(f"  - {error}", file=sys.stderr)
        return None


def run_async(coro: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        import uvloop

        return uvloop.run(coro())
    except ImportError:
        return asyncio.run(coro())


def load_settings(args: argparse.Namespace) -> config.Settings:
    return load_file(config_path(args))


def stop_processes(*procs: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Ask child processes to stop (SIGTERM), wait, and kill what does not."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def with_store(settings: config.Settings, body: Callable[[Redis], Awaitable[int]]) -> int:
    """Connect to the configured Redis, run body, close; a clear message when it is down."""

    async def main() -> int:
        url = connection.resolve_url(settings.redis.url, settings.redis.data_dir)
        redis = await connection.connect(url, cluster=settings.redis.cluster,
                                         wait_replicas=settings.redis.wait_replicas,
                                         wait_timeout_ms=settings.redis.wait_timeout_ms)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    try:
        return run_async(main)
    except connection.StoreError as exc:
        print(f"kamigate: {exc}", file=sys.stderr)
        return 1
