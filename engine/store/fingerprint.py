"""The import fingerprint codes were recorded under, kept in Redis so it cannot change under
them (promise C2: a code imported again under another fingerprint would not be recognised,
and could be sold twice).

Codes recorded unkeyed ("plain", no `[codes]` keys) may move to a keyed fingerprint — turning
sealing on — and are still recognised: imports then also look for each code's plain digest
(Redis is never given a new unkeyed one). Any other change is refused: a config that would
make it is not applied (ConfigError from the config room), and an import under it is refused.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from engine.store import keys
from engine.store.sealing import PLAIN_CHECK, Sealer


class FingerprintChanged(Exception):
    """The fingerprint differs from the one codes were recorded under."""


async def recorded(redis: Redis) -> str | None:
    """The fingerprint codes were recorded under; None before the first import."""
    found: Any = await redis.hget(keys.fingerprint(), "check")
    return None if found is None else str(found.decode())


def change_refused(stored: str | None, sealer: Sealer) -> str | None:
    """Why a config with this sealer may not run on this store (None when it may)."""
    wanted = sealer.fingerprint_check
    if stored is None or stored in (wanted, PLAIN_CHECK):
        return None
    if wanted == PLAIN_CHECK:
        return ("codes were imported under a fingerprint_key; [codes] keys and "
                "fingerprint_key cannot be taken away, or imports would sell them again")
    return ("codes were imported under another fingerprint_key: it cannot change, or codes "
            "seen before would be imported (and sold) again; put the old key back")


async def record(redis: Redis, sealer: Sealer) -> None:
    """Record the fingerprint in use, unless one is recorded already."""
    await redis.hsetnx(keys.fingerprint(), "check", sealer.fingerprint_check)


async def take(redis: Redis, sealer: Sealer) -> bool:
    """Record the fingerprint an import is about to use; whether codes were once recorded
    unkeyed (sealing turned on since). FingerprintChanged when the store was recorded under
    another one. import.lua checks the shard's own record again with each chunk, atomically,
    so an importer that started under an older config cannot add codes after a change."""
    wanted = sealer.fingerprint_check
    await record(redis, sealer)
    stored = await recorded(redis)
    why = change_refused(stored, sealer)
    if why is not None:
        raise FingerprintChanged(why)
    if stored == PLAIN_CHECK and wanted != PLAIN_CHECK:  # sealing was turned on
        await redis.hset(keys.fingerprint(), mapping={"check": wanted, "plain_before": 1})
    return bool(await redis.hexists(keys.fingerprint(), "plain_before"))
