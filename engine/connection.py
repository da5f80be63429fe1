"""Redis connections that pack commands with hiredis (C) instead of redis-py's pure-Python
packer: every request and every batch sends commands, and packing them was a fifth of the
worker's time."""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:
            # 'CONFIG GET' and the like: the server wants the words as separate arguments.
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class FastConnection(_HiredisPacking, Connection):
    """TCP connection with C command packing."""


class FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """Unix-socket connection with C command packing."""
