"""Redis connections that pack commands with hiredis (C) instead of redis-py's pure-Python
packer: every request and every batch sends commands, and packing them was a fifth of the
worker's time."""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, UnixDomainSocketConnection


class _HiredisPacking:
    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        # The server closed this pooled connection (a Redis restart) while it sat idle: open a
        # new one before sending. Nothing was sent yet, so this is never a repeated command
        # (redis-py's own retries are off: a script must not run twice).
        reader = getattr(self, "_reader", None)
        if reader is not None and reader.at_eof():
            await self.disconnect()  # type: ignore[attr-defined]
        await super().send_packed_command(command, check_health)  # type: ignore[misc]

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
