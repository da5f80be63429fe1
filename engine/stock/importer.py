"""Importing codes: lines streamed in chunks, each chunk one atomic script call that skips any
code ever seen for the SKU (promise C2)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

import msgspec
from redis.asyncio import Redis

from engine.clock import parse_rfc3339
from engine.store import fingerprint, keys, scripts
from engine.store.sealing import PLAIN, PLAIN_CHECK, Sealer
from engine.wire import msgpack_encode

CHUNK = 2000
MAX_CODE_LENGTH = 512


class ImportResult(msgspec.Struct):
    sku: str
    lot: str
    added: int = 0
    duplicates: int = 0
    invalid: int = 0
    available: int = 0


def default_lot() -> str:
    return datetime.now(UTC).strftime("L%Y%m%d%H%M%S")


def digest(code: str) -> str:
    """The unkeyed fingerprint (no `[codes]` keys): the same as PLAIN.digest."""
    return PLAIN.digest(code)


def valid_code(code: str) -> bool:
    return 0 < len(code) <= MAX_CODE_LENGTH and code.isprintable()


def parse_line(line: str, csv: bool) -> tuple[str, int] | None:
    """(code, expiry in unix seconds or 0), or None when the line is not a usable code."""
    expiry = 0
    if csv:
        code, _, rest = line.partition(",")
        rest = rest.strip()
        if rest:
            try:
                expiry = parse_rfc3339(rest) // 1000
            except ValueError:
                return None
    else:
        code = line
    code = code.strip()
    return (code, expiry) if valid_code(code) else None


class LotVoided(Exception):
    """An import into a lot id that was voided: refused whole (the first chunk is refused
    before anything is written; a lot cannot be voided while it is being imported into)."""


class ImportItem(msgspec.Struct, array_like=True, frozen=True):
    """One code of an import.lua chunk (the script names these fields in its header)."""

    digest: str  # its fingerprint under the fingerprint in use
    code: str  # as stored: sealed when keys are configured
    plain_digest: str  # its unkeyed digest ("" for an unkeyed import)


class Importer:
    """Feed lines; codes go to Redis in chunks, each chunk one atomic script call.
    FingerprintChanged when the store's codes were recorded under another fingerprint."""

    def __init__(self, redis: Redis, shards: int, sku: str, lot: str, expires_at: int,
                 csv: bool = False, progress: Callable[[int], None] | None = None,
                 sealer: Sealer = PLAIN) -> None:
        self.redis, self.sku, self.lot, self.csv = redis, sku, lot, csv
        self.expires_at = expires_at
        self.shard = keys.shard_of_sku(sku, shards)
        self.result = ImportResult(sku=sku, lot=lot)
        self.progress = progress
        self._chunks: dict[int, list[tuple[str, str]]] = {}
        self._first_row = True
        self.sealer = sealer  # seals each code for its SKU and lot (a no-op without keys)
        self._plain_before: bool | None = None  # codes were once recorded unkeyed

    async def feed(self, lines: Iterable[str]) -> None:
        for raw in lines:
            line = raw.strip("\r\n")
            if not line.strip():
                continue
            if self._first_row:
                self._first_row = False
                # a CSV header names its first column "code"; a code may start with "code"
                if self.csv and line.partition(",")[0].strip().lower() == "code":
                    continue
            parsed = parse_line(line, self.csv)
            if parsed is None:
                self.result.invalid += 1
                continue
            code, expiry = parsed
            chunk = self._chunks.setdefault(expiry or self.expires_at, [])
            chunk.append((self.sealer.digest(code), code))
            if len(chunk) >= CHUNK:
                await self._send(expiry or self.expires_at)

    async def finish(self) -> ImportResult:
        for expiry in list(self._chunks):
            await self._send(expiry)
        await self.redis.sadd(keys.skus_known(), self.sku)
        counts = keys.sku_counts(self.sku, self.shard)
        self.result.available = int(await self.redis.hget(counts, "available") or 0)
        return self.result

    def _lot_for(self, expiry: int) -> str:
        if expiry == self.expires_at:
            return self.lot
        # Rows of a CSV with their own expiry form a sub-lot, so each lot has one expiry.
        return f"{self.lot}~{expiry}"

    async def _send(self, expiry: int) -> None:
        chunk = self._chunks.pop(expiry, [])
        if not chunk:
            return
        if self._plain_before is None:
            self._plain_before = await fingerprint.take(self.redis, self.sealer)
        lot, s, sku = self._lot_for(expiry), self.shard, self.sku
        check = self.sealer.fingerprint_check
        items = [ImportItem(d, self.sealer.seal(sku, lot, code),
                            PLAIN.digest(code) if check != PLAIN_CHECK else "")
                 for d, code in chunk]
        added, dups, available = await scripts.IMPORT(
            self.redis,
            [keys.sku_counts(sku, s), keys.lots(sku, s), keys.lot_expiry(sku, s),
             keys.seen(sku, s), keys.lot_codes(sku, lot, s), keys.stream(s),
             keys.shard_fingerprint(s)],
            [lot, expiry, sku, msgpack_encode(items), check, int(self._plain_before)],
        )
        if added == -2:
            raise fingerprint.FingerprintChanged(
                f"codes of {sku} were recorded under another fingerprint_key: this import "
                "runs with a config the fleet refused; nothing was imported")
        if added < 0:
            raise LotVoided(f"lot {lot!r} of {sku} was voided (recalled); import under a new "
                            "lot id")
        self.result.added += added
        self.result.duplicates += dups
        self.result.available = available
        if self.progress is not None:
            self.progress(len(chunk))
