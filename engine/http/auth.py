"""Bearer authentication: storefront keys for /v1, admin roles for /admin."""

from __future__ import annotations

from engine import errors
from engine.config.directory import ROLE_RANK, Directory
from engine.config.settings import Admin, Storefront
from engine.http.incoming import Incoming
from engine.http.signing import SIGNATURE, signed_storefront


def _principal(request: Incoming, directory: Directory) -> Storefront | Admin:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise errors.Unauthenticated("send Authorization: Bearer <key>")
    if not token.isascii():  # keys are ASCII; bytes aiohttp cannot decode arrive as surrogates
        raise errors.Unauthenticated("unknown key")
    found = directory.principal(token.strip())
    if found is None:
        raise errors.Unauthenticated("unknown key")
    return found


async def storefront_of(request: Incoming, directory: Directory) -> Storefront:
    """The storefront behind a bearer key or a request signature (see signing)."""
    if SIGNATURE in request.headers:
        return await signed_storefront(request, directory)
    found = _principal(request, directory)
    if not isinstance(found, Storefront):
        raise errors.Forbidden("order routes need a storefront key")
    if found.require_signature:
        raise errors.Unauthenticated(f"this storefront must sign its requests ({SIGNATURE})")
    return found


def admin_of(request: Incoming, directory: Directory, role: str) -> Admin:
    found = _principal(request, directory)
    if not isinstance(found, Admin):
        raise errors.Forbidden("admin routes need an admin key")
    if ROLE_RANK[found.role] < ROLE_RANK[role]:
        raise errors.Forbidden(f"this route needs the {role} role; the key has {found.role}")
    return found
