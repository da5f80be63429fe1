"""Signed storefront requests (optional, beside bearer keys): the storefront proves it holds
its `signing_secret` for this exact request, within ±300 s, once.

    Kamigate-Storefront: <storefront id>
    Kamigate-Request-Signature: t=<unix s>,n=<nonce>,v1=<hex HMAC-SHA256(signing_secret,
        "<t>\\n<nonce>\\n<METHOD>\\n<path?query>\\n<hex SHA-256 of the body>")>

The nonce (16–64 characters of [A-Za-z0-9_-]) is stored in Redis for twice the window, so a
captured request cannot be replayed. A storefront with `require_signature = true` is refused
a bearer key alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from engine import errors
from engine.config.directory import Directory
from engine.config.settings import Storefront
from engine.http.codec import read_body
from engine.http.incoming import Incoming
from engine.http.state import REDIS
from engine.store import keys

WINDOW_S = 300
SIGNATURE = "Kamigate-Request-Signature"
_PARTS = re.compile(r"^t=(\d{1,12}),n=([A-Za-z0-9_-]{16,64}),v1=([0-9a-f]{64})$(?!\n)")


def canonical(t: str, nonce: str, method: str, path_qs: str, body: bytes) -> bytes:
    return "\n".join([t, nonce, method, path_qs, hashlib.sha256(body).hexdigest()]).encode()


def sign(secret: str, t: str, nonce: str, method: str, path_qs: str, body: bytes) -> str:
    """The header value for a request (what a storefront computes)."""
    mac = hmac.new(secret.encode(), canonical(t, nonce, method, path_qs, body),
                   hashlib.sha256).hexdigest()
    return f"t={t},n={nonce},v1={mac}"


async def signed_storefront(request: Incoming, directory: Directory) -> Storefront:
    """The storefront whose signature this request carries; 401 for anything less."""
    ident = request.headers.get("Kamigate-Storefront", "")
    storefront = directory.storefront_by_id.get(ident)
    if storefront is None or not storefront.signing_secret:
        raise errors.Unauthenticated("unknown storefront, or it has no signing_secret")
    match = _PARTS.match(request.headers[SIGNATURE])
    if match is None:
        raise errors.Unauthenticated(f"{SIGNATURE} must be t=<unix>,n=<nonce>,v1=<hex>")
    t, nonce, _ = match.groups()
    if abs(time.time() - int(t)) > WINDOW_S:
        raise errors.Unauthenticated(f"signature timestamp outside ±{WINDOW_S} s")
    body = await read_body(request)  # bounded by server.body_timeout_s, like every body
    expected = sign(storefront.signing_secret, t, nonce, request.method, request.path_qs, body)
    if not hmac.compare_digest(expected.encode(), request.headers[SIGNATURE].encode()):
        raise errors.Unauthenticated("signature does not match the request")
    fresh = await request.app[REDIS].set(keys.nonce(storefront.id, nonce), b"1",
                                         nx=True, ex=2 * WINDOW_S)
    if not fresh:
        raise errors.Unauthenticated("this signature was used before (replay)")
    return storefront
