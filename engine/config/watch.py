"""Keeping a process on the fleet's config: follow Redis, and re-read the config file on
SIGHUP or when it changes on disk (watchfiles). An unusable file is logged, every error by
key, and changes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.config.diff import diff
from engine.config.live import Follower, Running, publish, read_file, restart_needed
from engine.config.loading import ConfigError
from engine.config.redaction import public_sha256
from engine.config.settings import Settings
from engine.tasks import stop_tasks

log = logging.getLogger("kamigate.config")
WATCH_DEBOUNCE_MS = 100


async def apply_document(redis: Redis, follower: Follower, document: Mapping[str, Any],
                         settings: Settings, origin: str, by: str,
                         file_sha256: str = "") -> tuple[Running, bool]:
    """Validate against the running config, publish to the fleet and apply here at once;
    (the running config, whether it changed). ConfigError when a restart would be needed."""
    problems = restart_needed(follower.running.settings, settings)
    if problems:
        raise ConfigError(problems)
    version, changed = await publish(redis, document, settings, origin, by, file_sha256,
                                     diff(follower.running.settings, settings))
    if changed:
        follower.adopt(Running(version, public_sha256(settings), settings, document, origin, by,
                               int(time.time() * 1000)))
    return follower.running, changed


async def reload_file(redis: Redis, follower: Follower, path: str, origin: str,
                      by: str = "") -> tuple[Running, bool]:
    """Re-read the config file and apply it (see apply_document)."""
    document, settings, file_sha = read_file(path)
    return await apply_document(redis, follower, document, settings, origin, by, file_sha)


async def _reload_logged(redis: Redis, follower: Follower, path: str, origin: str) -> None:
    try:
        await reload_file(redis, follower, path, origin)
    except ConfigError as exc:
        log.error("%s: config not applied (%s); still running version %s:\n  - %s", path,
                  origin, follower.running.version, "\n  - ".join(exc.errors))
    except (RedisError, OSError) as exc:
        log.error("%s: config not applied (%s): Redis unavailable (%s)", path, origin,
                  type(exc).__name__)


async def _watch(redis: Redis, follower: Follower, path: str) -> None:
    from watchfiles import awatch

    # Watch the directory: editors and deploy tools replace the file rather than write it.
    folder, name = os.path.split(os.path.abspath(path))
    async for _ in awatch(folder, watch_filter=lambda _c, p: os.path.basename(p) == name,
                          debounce=WATCH_DEBOUNCE_MS, step=50, recursive=False):
        await _reload_logged(redis, follower, path, "watch")


@contextlib.asynccontextmanager
async def keep_config(redis: Redis, follower: Follower, path: str | None,
                      watch: bool = True) -> AsyncIterator[None]:
    """Follow the fleet's config for the block's duration; with a path, also reload the file on
    SIGHUP and (watch=True) when it changes."""
    tasks = [asyncio.create_task(follower.run())]
    loop = asyncio.get_running_loop()
    hup = False
    if path is not None:
        if watch:
            tasks.append(asyncio.create_task(_watch(redis, follower, path)))
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGHUP, lambda: tasks.append(asyncio.create_task(
                _reload_logged(redis, follower, path, "sighup"))))
            hup = True
    try:
        yield
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        await stop_tasks(tasks)
