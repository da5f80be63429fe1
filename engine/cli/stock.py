"""`kamigate stock import SKU FILE`: stream a file of codes into stock, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from engine.cli.support import load_settings, with_store
from engine.clock import parse_rfc3339
from engine.config.directory import Directory
from engine.stock.importer import CHUNK, Importer, LotVoided, default_lot
from engine.store import audit
from engine.store.fingerprint import FingerprintChanged


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    stock = commands.add_parser("stock", help="stock operations")
    actions = stock.add_subparsers(dest="stock_command", required=True)
    imp = actions.add_parser("import", parents=[common], help="bulk import codes from a file")
    imp.add_argument("sku")
    imp.add_argument("file", help="one code per line (.txt) or code[,expires_at] (.csv)")
    imp.add_argument("--lot")
    imp.add_argument("--expires-at")
    imp.set_defaults(func=cmd_stock_import)


def cmd_stock_import(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    settings = load_settings(args)
    if args.sku not in {s.id for s in settings.skus}:
        print(f"kamigate: no SKU {args.sku!r} is configured", file=sys.stderr)
        return 1
    file = Path(args.file)
    if not file.exists():
        print(f"kamigate: no such file {file}", file=sys.stderr)
        return 1
    expires_at = 0
    if args.expires_at:
        try:
            expires_at = parse_rfc3339(args.expires_at) // 1000
        except ValueError:
            print("kamigate: --expires-at must be an RFC 3339 timestamp", file=sys.stderr)
            return 1

    async def body(redis: Redis) -> int:
        total = file.stat().st_size
        try:
            with Progress(TextColumn("importing {task.fields[sku]}"), BarColumn(),
                          TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                          transient=False) as bar:
                task = bar.add_task("import", total=total, sku=args.sku)
                intake = Importer(redis, settings.redis.shards, args.sku,
                                          args.lot or default_lot(), expires_at,
                                          csv=file.suffix.lower() == ".csv",
                                          sealer=Directory(settings).sealer)
                with file.open("rb") as fh:
                    batch: list[str] = []
                    for raw in fh:
                        batch.append(raw.decode("utf-8", errors="replace"))
                        if len(batch) >= CHUNK:
                            await intake.feed(batch)
                            bar.update(task, completed=fh.tell())
                            batch = []
                    await intake.feed(batch)
                result = await intake.finish()
                bar.update(task, completed=total)
        except (LotVoided, FingerprintChanged) as exc:
            print(f"kamigate: {exc}", file=sys.stderr)
            return 1
        await audit.record(redis, "cli", "stock.import", {  # as the HTTP import is
            "sku": result.sku, "lot": result.lot, "added": result.added,
            "duplicates": result.duplicates, "invalid": result.invalid})
        print(f"{result.sku} lot {result.lot}: added {result.added}, duplicates "
              f"{result.duplicates}, invalid {result.invalid}, available {result.available}")
        return 0

    return with_store(settings, body)
