"""Request decoding (JSON or msgpack, validated) and response encoding (as the client accepts)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from aiohttp.http import HttpProcessingError

from engine import errors
from engine.http.incoming import Answer, Incoming
from engine.http.state import DIRECTORY
from engine.wire import BodyDecoder, json_encode, msgpack_encode

T = TypeVar("T")
MSGPACK = "application/msgpack"
MAX_FIELD_NAME = 64  # an unknown field's name is the client's: shown cut to this
MAX_MESSAGE = 200  # and so may a message be that repeats it


def validation_problem(exc: msgspec.ValidationError) -> errors.Problem:
    """msgspec's message as a problem naming the field. Plain string operations only: the
    message repeats the client's field names, and a pattern searched over it costs
    quadratic time in a crafted name."""
    message, path = errors.split_validation(str(exc))
    field = path or "body"
    for prefix, what in (("Object contains unknown field `", "unknown field"),
                         ("Object missing required field `", "required")):
        if message.startswith(prefix) and message.endswith("`"):
            name = message[len(prefix):-1]
            if len(name) > MAX_FIELD_NAME:
                name = name[:MAX_FIELD_NAME] + "…"
            field = f"{path}.{name}" if path else name
            message = what
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "…"
    if len(field) > MAX_MESSAGE:  # a path faked inside a name is the client's text too
        field = field[:MAX_MESSAGE] + "…"
    return errors.invalid(field, message)


async def read_body(request: Incoming) -> bytes:
    """The whole body; 408 when the client stalls longer than server.body_timeout_s (a slow
    client is cut off; it never holds up others, the loop serves them meanwhile). A body cut
    short or not decodable is the client's fault (422), never counted as a store outage."""
    try:
        if request.content.is_eof():  # all of it arrived with the headers: the usual case
            return await request.read()
        limit = request.app[DIRECTORY].current.settings.server.body_timeout_s
        try:
            async with asyncio.timeout(limit):
                return await request.read()
        except TimeoutError:
            raise errors.RequestTimeout(f"the body did not arrive within {limit:g} s") from None
    except ConnectionResetError:
        raise errors.invalid("body", "the connection closed before the whole body arrived"
                             ) from None
    except (HttpProcessingError, web.RequestPayloadError) as exc:  # e.g. a bad gzip body
        cause = exc.__cause__ if isinstance(exc.__cause__, HttpProcessingError) else exc
        why = cause.message if isinstance(cause, HttpProcessingError) else "malformed"
        raise errors.invalid("body", f"not readable: {why.strip()}") from None


def media_type(request: Incoming) -> str:
    """The Content-Type's media type; 415 for a header the parser cannot read (aiohttp's
    email-header parser raises on some broken parameters, e.g. `a*`)."""
    try:
        return request.content_type
    except Exception:
        raise errors.UnsupportedMediaType("the Content-Type header does not parse") from None


async def decode_body(request: Incoming, decoder: BodyDecoder[T]) -> T:
    """The body as `decoder.type`, from JSON or msgpack (by Content-Type), validated."""
    ctype = media_type(request)
    is_json = ctype in ("application/json", "application/octet-stream", "text/plain") or \
        ctype.endswith("+json")
    if ctype != MSGPACK and not is_json:
        raise errors.UnsupportedMediaType(f"send application/json or {MSGPACK}, not {ctype}")
    body = await read_body(request)
    try:
        return decoder.json(body) if is_json else decoder.msgpack(body)
    except msgspec.ValidationError as exc:
        # JSON has one number type: 2.0 is the integer 2 (as in JSON Schema)
        retried = _with_whole_floats_as_ints(body, decoder.type) if is_json else None
        if retried is not None:
            return retried
        raise validation_problem(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        # msgspec raises UnicodeDecodeError for invalid UTF-8 inside strings and keys.
        kind = "JSON" if is_json else "msgpack"
        why = "invalid UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise errors.invalid("body", f"not valid {kind}: {why}") from None


def _with_whole_floats_as_ints(body: bytes, target: type[T]) -> T | None:
    """The body again with every whole float (1.0, 1e0) read as an int; None when it holds
    none, or when it is still not a valid `target` (the first error is the one reported)."""
    changed = False

    def whole(node: Any) -> Any:
        nonlocal changed
        if isinstance(node, float) and node.is_integer() and abs(node) < 2**63:
            changed = True
            return int(node)
        if isinstance(node, dict):
            return {k: whole(v) for k, v in node.items()}
        if isinstance(node, list):
            return [whole(v) for v in node]
        return node

    try:
        document = whole(msgspec.json.decode(body))
        if not changed:
            return None
        found: T = msgspec.convert(document, target)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        # malformed further on, or nested past what the types allow: the first error stands
        return None
    return found


def encode_body(request: Incoming, body: Any) -> tuple[bytes, str]:
    """JSON, or msgpack when the client's Accept names it and does not prefer JSON."""
    accept = request.headers.get("Accept")
    if accept and _prefers_msgpack(accept):
        return msgpack_encode(body), MSGPACK
    return json_encode(body), "application/json"


def accept_weights(header: str) -> list[tuple[str, float]]:
    """The tokens of an Accept-style header (lower-cased) with their q values, in header
    order; a q that does not parse counts as 0."""
    found = []
    for part in header.split(","):
        token, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if token:
            found.append((token.lower(), q))
    return found


@functools.lru_cache(maxsize=256)  # storefronts send a handful of Accept values
def _prefers_msgpack(accept: str) -> bool:
    """msgpack's quality (it must be named: `*/*` means JSON) is above 0 and at least
    JSON's, which comes from its most specific range (application/json, application/*,
    */*)."""
    msgpack_q, json_q, json_rank = 0.0, 0.0, 0
    for kind, quality in accept_weights(accept):
        rank = {"application/json": 3, "application/*": 2, "*/*": 1}.get(kind, 0)
        if kind == MSGPACK:
            msgpack_q = quality
        elif rank > json_rank:
            json_q, json_rank = quality, rank
    return msgpack_q > 0 and msgpack_q >= json_q


def respond(request: Incoming, body: Any, status: int = 200,
            headers: Mapping[str, str] | None = None) -> web.Response:
    """The body encoded as the client accepts (JSON or msgpack), as a response."""
    payload, ctype = encode_body(request, body)
    return web.Response(body=payload, status=status, content_type=ctype, headers=headers)


Route = Callable[[web.Request], Awaitable[web.Response]]


def route(core: Callable[[Incoming], Awaitable[Answer]]) -> Route:
    """An aiohttp handler of a route written against Incoming (the lean door serves the same
    function without aiohttp's Request and Response)."""
    @functools.wraps(core)
    async def handler(request: web.Request) -> web.Response:
        status, body, headers = await core(request)
        return respond(request, body, status, headers)
    return handler
