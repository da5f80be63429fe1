"""Admin routes: stock import and void, SKU levels."""

from __future__ import annotations

import asyncio
import re
import tempfile
from typing import IO

import msgspec
from aiohttp import web

from engine import errors
from engine.clock import parse_rfc3339
from engine.controls import maintenance
from engine.http.auth import admin_of
from engine.http.codec import decode_body, media_type, respond
from engine.http.state import DIRECTORY, MAINTENANCE, REDIS
from engine.stock.importer import CHUNK, Importer, LotVoided, default_lot
from engine.stock.lots import levels, void_lot
from engine.store import audit
from engine.wire import EXISTING_LOT_PATTERN, LOT_PATTERN, SKU_PATTERN, BodyDecoder

_SKU = re.compile(SKU_PATTERN)
_MAINTENANCE_STATE = BodyDecoder(maintenance.MaintenanceState)
_LOT = re.compile(LOT_PATTERN)
# a lot that exists may also be a sub-lot of a CSV import, "<lot>~<expiry>"
_EXISTING_LOT = re.compile(EXISTING_LOT_PATTERN)


def _sku(request: web.Request) -> str:
    sku = request.match_info["sku"]
    if not _SKU.match(sku) or sku not in request.app[DIRECTORY].current.skus:
        raise errors.UnknownSku(f"no SKU {sku!r} is configured")
    return sku


async def _spool(request: web.Request, limit: int) -> IO[bytes]:
    """The whole body, in memory up to 8 MiB and on disk beyond; 413 before any code is
    stored when it is over the limit (an import is all or nothing at the door)."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.PayloadTooLarge(f"imports are limited to {limit} bytes")
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115
    seen = 0
    stall = request.app[DIRECTORY].current.settings.server.body_timeout_s
    try:
        while True:
            try:
                # an upload may take long; one that stops moving is cut off
                async with asyncio.timeout(stall):
                    chunk = await request.content.readany()
            except TimeoutError:
                raise errors.RequestTimeout(f"the upload stalled for {stall:g} s") from None
            if not chunk:
                break
            seen += len(chunk)
            if seen > limit:
                raise errors.PayloadTooLarge(f"imports are limited to {limit} bytes")
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "\x00"  # not printable: counted as invalid, never stored


async def import_stock(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    sku = _sku(request)
    lot = request.query.get("lot") or default_lot()
    if not _LOT.match(lot):
        raise errors.invalid("lot", "1-64 characters: letters, digits and . _ : @ -")
    expires_at = 0
    if request.query.get("expires_at"):
        try:
            expires_at = parse_rfc3339(request.query["expires_at"]) // 1000
        except ValueError:
            raise errors.invalid("expires_at", "must be an RFC 3339 timestamp") from None
    ctype = media_type(request)
    if ctype not in ("text/plain", "text/csv", "application/octet-stream"):
        raise errors.UnsupportedMediaType("send text/plain (one code per line) or text/csv")
    intake = Importer(request.app[REDIS], directory.settings.redis.shards, sku, lot,
                      expires_at, csv=ctype == "text/csv", sealer=directory.sealer)
    try:
        with await _spool(request, directory.settings.server.max_import_bytes) as body:
            batch: list[str] = []
            for raw in body:
                batch.append(_text(raw))
                if len(batch) >= CHUNK:
                    await intake.feed(batch)
                    batch = []
            await intake.feed(batch)
        result = await intake.finish()
    except LotVoided as exc:
        raise errors.LotVoided(str(exc)) from None
    await audit.record(request.app[REDIS], who.id, "stock.import", {
        "sku": sku, "lot": result.lot, "added": result.added,
        "duplicates": result.duplicates, "invalid": result.invalid})
    return respond(request, result)


async def void_stock(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    sku = _sku(request)
    lot = request.query.get("lot", "")
    if not _EXISTING_LOT.match(lot):
        raise errors.invalid("lot", "name the lot to void: ?lot=ID")
    voided, available = await void_lot(
        request.app[REDIS], directory.settings.redis.shards, sku, lot
    )
    await audit.record(request.app[REDIS], who.id, "stock.void",
                       {"sku": sku, "lot": lot, "voided": voided})
    return respond(request, {"sku": sku, "lot": lot, "voided": voided, "available": available})


async def list_skus(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    admin_of(request, directory, "viewer")
    found = await levels(request.app[REDIS], directory.settings.redis.shards,
                         directory.skus, [s.id for s in directory.settings.storefronts])
    return respond(request, {"skus": found})


async def get_sku(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    admin_of(request, directory, "viewer")
    sku = _sku(request)
    [found] = await levels(request.app[REDIS], directory.settings.redis.shards, [sku],
                           [s.id for s in directory.settings.storefronts])
    return respond(request, found)


async def set_maintenance(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    state = await decode_body(request, _MAINTENANCE_STATE)
    problems = maintenance.check(state)
    if problems:
        raise errors.InvalidRequest("; ".join(problems), errors=[
            errors.FieldError(p.partition(": ")[0], p.partition(": ")[2]) for p in problems])
    if state.scope != "global":
        kind, _, name = state.scope.partition(":")
        known = directory.skus if kind == "sku" else \
            {s.id for s in directory.settings.storefronts}
        if name not in known:
            raise errors.invalid("scope", f"no {kind} {name!r} is configured")
    await maintenance.store(request.app[REDIS], state)
    await audit.record(request.app[REDIS], who.id, "maintenance",
                       msgspec.to_builtins(state))
    # this door at once; the others within a second
    if state.scope == "global":
        request.app[MAINTENANCE].state = state
    else:
        request.app[MAINTENANCE].scoped = await maintenance.load_scoped(request.app[REDIS])
    return respond(request, state)


def routes() -> list[web.RouteDef]:
    return [
        web.put("/admin/maintenance", set_maintenance),
        web.post("/admin/skus/{sku}/stock", import_stock),
        web.delete("/admin/skus/{sku}/stock", void_stock),
        web.get("/admin/skus", list_skus),
        web.get("/admin/skus/{sku}", get_sku),
    ]
