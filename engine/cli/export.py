"""`kamigate export`: write the archived orders (decided orders past `[orders] retention_s`) as
JSON lines, oldest first per shard, and remove from the archive what was written, so it stays
bounded. At least once: a line is written (and flushed) before its entry is removed, so an
export stopped between the two writes that order again next time (the order_id tells)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import stat
import sys
from typing import IO, Any

import msgspec
from redis.asyncio import Redis

from engine import failpoints
from engine.cli.support import load_settings, with_store
from engine.clock import parse_rfc3339, rfc3339
from engine.config.directory import Directory
from engine.store import keys, records
from engine.views import record_view
from engine.wire import json_encode

PAGE = 500
FOLLOW_EVERY_S = 1.0


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    export = commands.add_parser(
        "export", parents=[common],
        help="write archived orders as JSON lines, and remove them from the archive")
    export.add_argument("--since", help="only orders decided at or after this (RFC 3339); "
                                        "older ones stay in the archive")
    export.add_argument("--follow", action="store_true",
                        help="keep going: write new archived orders as they come, until "
                             "interrupted")
    export.add_argument("--with-codes", action="store_true",
                        help="include the codes (opened with the configured keys); without "
                             "it no code is written")
    export.add_argument("--output", help="append to this file (default: standard output)")
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    since_ms = 0
    if args.since:
        try:
            since_ms = parse_rfc3339(args.since)
        except ValueError as exc:
            print(f"kamigate: --since: {exc}", file=sys.stderr)
            return 2

    async def body(redis: Redis) -> int:
        directory = Directory(settings)  # opens the codes (--with-codes) and links the pages
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        total = 0
        with contextlib.ExitStack() as opened:
            out: IO[str] = opened.enter_context(open(args.output, "a", encoding="utf-8")) \
                if args.output else sys.stdout
            while True:
                total += await export_once(redis, directory, out, since_ms, args.with_codes)
                if not args.follow or stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), FOLLOW_EVERY_S)
        print(f"kamigate: exported {total} orders", file=sys.stderr)
        return 0

    return with_store(settings, body)


async def export_once(redis: Redis, directory: Directory, out: IO[str], since_ms: int,
                      with_codes: bool) -> int:
    """One pass over every shard's archive: the orders written."""
    written = 0
    for shard in range(directory.settings.redis.shards):
        start = "-"
        while True:
            entries: Any = await redis.xrange(keys.archive(shard), start, "+", count=PAGE)
            if not entries:
                break
            done = []
            for entry_id, fields in entries:
                line = _line(directory, entry_id, fields, since_ms, with_codes)
                if line is not None:
                    out.write(line + "\n")
                    done.append(entry_id)
            out.flush()
            if out is not sys.stdout and stat.S_ISREG(os.fstat(out.fileno()).st_mode):
                os.fsync(out.fileno())  # a file: on disk before the archive lets go
            failpoints.hit("export.after_write")
            if done:
                await redis.xdel(keys.archive(shard), *done)
            written += len(done)
            if len(entries) < PAGE:
                break
            start = "(" + entries[-1][0].decode()
    return written


def _line(directory: Directory, entry_id: bytes, fields: dict[bytes, bytes], since_ms: int,
          with_codes: bool) -> str | None:
    record = records.parse(fields)
    if record is None or record.updated_ms < since_ms:
        return None
    view = record_view(directory, record, None)
    found = msgspec.to_builtins(view)
    if not with_codes:
        found.pop("codes", None)
    found["archived_at"] = rfc3339(int(entry_id.split(b"-")[0]))
    return json_encode(found).decode()
