"""Live config in the front door: start on the fleet's config, follow it, and the admin routes
that read and replace it (GET/PUT /admin/config, POST /admin/config/reload)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from engine import errors
from engine.config.directory import Directory
from engine.config.live import Follower, Running, boot, page_secret, parse_document
from engine.config.loading import ConfigError, from_mapping
from engine.config.redaction import keep_running, redacted
from engine.config.watch import apply_document, keep_config, reload_file
from engine.door.admission import Admission
from engine.http.auth import admin_of
from engine.http.codec import media_type, read_body, respond
from engine.http.guards import BREAKER, breaker_rules
from engine.http.state import ADMISSION, DIRECTORY, INGEST, REDIS

FOLLOWER = web.AppKey("config_follower", Follower)
CONFIG_FILE = web.AppKey("config_file", str)
PAGE_SECRET = web.AppKey("page_secret", str)


def apply(app: web.Application, running: Running) -> None:
    """Swap in a config: one synchronous step, so no request sees half of it."""
    settings = running.settings
    app[DIRECTORY].current = Directory(settings, app.get(PAGE_SECRET, ""))
    old = app[ADMISSION].current
    app[ADMISSION].current = Admission(settings, time.monotonic(), old.share).inherit(old)
    app[BREAKER].update_rules(breaker_rules(settings.breaker))
    room = settings.waiting_room
    if INGEST in app:
        app[INGEST].capacity = room.capacity if room.enabled else 0


def config_ctx(path: str | None, watch: bool = True) -> Any:
    """A cleanup context: adopt the fleet's config, then follow it until shutdown."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = app[REDIS]
        app[PAGE_SECRET] = await page_secret(redis)
        running = await boot(redis, path, app[DIRECTORY].current.settings)
        follower = Follower(redis, running, lambda r: apply(app, r))
        app[FOLLOWER] = follower
        apply(app, running)
        async with keep_config(redis, follower, path, watch):
            yield

    return ctx


def _view(running: Running, changed: bool | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "version": running.version, "sha256": running.sha256, "origin": running.origin,
        "by": running.by or None, "config": redacted(running.settings),
    }
    if changed is not None:
        view["changed"] = changed
    return view


def _refused(exc: ConfigError) -> errors.Problem:
    fields = [errors.FieldError(e.partition(": ")[0], e.partition(": ")[2] or e)
              for e in exc.errors]
    return errors.InvalidRequest(
        f"config refused ({len(exc.errors)} problem{'s' if len(exc.errors) != 1 else ''}); "
        "the running config stays", errors=fields)


async def get_config(request: web.Request) -> web.Response:
    admin_of(request, request.app[DIRECTORY].current, "viewer")
    return respond(request, _view(request.app[FOLLOWER].running))


async def put_config(request: web.Request) -> web.Response:
    who = admin_of(request, request.app[DIRECTORY].current, "admin")
    content_type = media_type(request)
    if content_type not in ("application/json", "application/toml", "text/plain",
                            "text/x-toml", "application/octet-stream"):
        raise errors.UnsupportedMediaType("send the config as application/toml or "
                                          "application/json")
    body = await read_body(request)
    follower = request.app[FOLLOWER]
    try:
        document = parse_document(body, content_type)
        # what GET showed as "***" keeps its running value: never stored as a secret
        problems: list[str] = []
        document = keep_running(document, follower.running.document, problems)
        if problems:
            raise ConfigError(problems)
        running, changed = await apply_document(request.app[REDIS], follower, document,
                                                from_mapping(document), "api", who.id)
    except ConfigError as exc:
        raise _refused(exc) from None
    return respond(request, _view(running, changed))


async def reload_config(request: web.Request) -> web.Response:
    who = admin_of(request, request.app[DIRECTORY].current, "admin")
    path = request.app.get(CONFIG_FILE)
    if path is None:
        raise errors.NotFound("this front door was started without a config file")
    try:
        running, changed = await reload_file(request.app[REDIS], request.app[FOLLOWER], path,
                                             "reload", who.id)
    except ConfigError as exc:
        raise _refused(exc) from None
    return respond(request, _view(running, changed))


def routes() -> list[web.RouteDef]:
    return [
        web.get("/admin/config", get_config),
        web.put("/admin/config", put_config),
        web.post("/admin/config/reload", reload_config),
    ]
