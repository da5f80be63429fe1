"""Request decoding (JSON or msgpack, validated) and response encoding (as the client accepts)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from engine import errors
from engine.http.state import DIRECTORY
from engine.wire import json_encode, msgpack_encode

T = TypeVar("T")
MSGPACK = "application/msgpack"
_PATH = re.compile(r" - at `\$\.?(.*)`$")


def validation_problem(exc: msgspec.ValidationError) -> errors.Problem:
    message = str(exc)
    match = _PATH.search(message)
    field = "body"
    if match:
        message = message[: match.start()]
        field = match.group(1) or "body"
    if message.startswith("Object contains unknown field"):
        name = message.split("`")[1]
        field = f"{field}.{name}" if field != "body" else name
        message = "unknown field"
    elif message.startswith("Object missing required field"):
        name = message.split("`")[1]
        field = f"{field}.{name}" if field != "body" else name
        message = "required"
    return errors.invalid(field, message)


async def read_body(request: web.Request) -> bytes:
    """The whole body; 408 when the client stalls longer than server.body_timeout_s (a slow
    client is cut off; it never holds up others, the loop serves them meanwhile)."""
    if request.content.is_eof():  # all of it arrived with the headers: the usual case
        return await request.read()
    limit = request.app[DIRECTORY].current.settings.server.body_timeout_s
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise errors.RequestTimeout(f"the body did not arrive within {limit:g} s") from None


async def decode_body(
    request: web.Request,
    json_decoder: Callable[[bytes], T],
    msgpack_decoder: Callable[[bytes], T],
) -> T:
    ctype = request.content_type
    if ctype == MSGPACK:
        decoder = msgpack_decoder
    elif ctype in ("application/json", "application/octet-stream", "text/plain") or \
            ctype.endswith("+json"):
        decoder = json_decoder
    else:
        raise errors.UnsupportedMediaType(f"send application/json or {MSGPACK}, not {ctype}")
    body = await read_body(request)
    try:
        return decoder(body)
    except msgspec.ValidationError as exc:
        raise validation_problem(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside strings and keys.
        kind = "msgpack" if decoder is msgpack_decoder else "JSON"
        why = "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise errors.invalid("body", f"not valid {kind}: {why}") from None


def encode_body(request: web.Request, body: Any) -> tuple[bytes, str]:
    if MSGPACK in request.headers.get("Accept", ""):
        return msgpack_encode(body), MSGPACK
    return json_encode(body), "application/json"


def respond(request: web.Request, body: Any, status: int = 200,
            headers: dict[str, str] | None = None) -> web.Response:
    """The body encoded as the client accepts (JSON or msgpack), as a response."""
    payload, ctype = encode_body(request, body)
    return web.Response(body=payload, status=status, content_type=ctype, headers=headers)
