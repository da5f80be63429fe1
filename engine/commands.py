"""The operator commands that talk to a running store: stock import, reconcile, status."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from engine import config, keys, matching, store
from engine.cli_support import load_settings, run_async


def _with_store(settings: config.Settings, body: Callable[[Redis], Awaitable[int]]) -> int:
    """Connect to the configured Redis, run body, close; a clear message when it is down."""

    async def main() -> int:
        redis = await store.connect(store.resolve_url(settings))
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    try:
        return run_async(main)
    except store.StoreError as exc:
        print(f"kamigate: {exc}", file=sys.stderr)
        return 1


def cmd_stock_import(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from engine import stock

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
        from engine.clock import parse_rfc3339

        try:
            expires_at = parse_rfc3339(args.expires_at) // 1000
        except ValueError:
            print("kamigate: --expires-at must be an RFC 3339 timestamp", file=sys.stderr)
            return 1

    async def body(redis: Redis) -> int:
        total = file.stat().st_size
        with Progress(TextColumn("importing {task.fields[sku]}"), BarColumn(),
                      TextColumn("{task.percentage:>3.0f}%"), TimeRemainingColumn(),
                      transient=False) as bar:
            task = bar.add_task("import", total=total, sku=args.sku)
            importer = stock.Importer(redis, settings.redis.shards, args.sku,
                                      args.lot or stock.default_lot(), expires_at,
                                      csv=file.suffix.lower() == ".csv")
            with file.open("rb") as fh:
                batch: list[str] = []
                for raw in fh:
                    batch.append(raw.decode("utf-8", errors="replace"))
                    if len(batch) >= stock.CHUNK:
                        await importer.feed(batch)
                        bar.update(task, completed=fh.tell())
                        batch = []
                await importer.feed(batch)
            result = await importer.finish()
            bar.update(task, completed=total)
        print(f"{result.sku} lot {result.lot}: added {result.added}, duplicates "
              f"{result.duplicates}, invalid {result.invalid}, available {result.available}")
        return 0

    return _with_store(settings, body)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from engine.reconcile import reconcile

    settings = load_settings(args)

    async def body(redis: Redis) -> int:
        report = await reconcile(redis, settings.redis.shards, [s.id for s in settings.skus])
        for violation in report.violations:
            print(f"VIOLATION {violation}")
        print(f"reconcile: {report.skus} SKUs, {report.codes_checked} codes checked, "
              f"{len(report.violations)} violations")
        return 0 if report.ok else 1

    return _with_store(settings, body)


def cmd_status(args: argparse.Namespace) -> int:
    """SKUs, stock, lines, the fleet and the switches in force, as tables."""
    from rich.console import Console
    from rich.table import Table

    from engine import maintenance, stock
    from engine.heartbeat import alive

    settings = load_settings(args)

    async def body(redis: Redis) -> int:
        found = await stock.levels(redis, settings.redis.shards, [s.id for s in settings.skus])
        console = Console()
        table = Table(title=f"kamigate — {matching.describe()}")
        columns = ("SKU", "available", "held", "issued", "voided", "waiting (sold out)",
                   "waiting (overflow)", "lots")
        for column in columns:
            table.add_column(column, justify="left" if column == "SKU" else "right")
        for level in found:
            shard = keys.shard_of_sku(level.sku, settings.redis.shards)
            overflow = int(await redis.zcard(keys.overflow_line(level.sku, shard)))
            table.add_row(level.sku, str(level.available), str(level.held), str(level.issued),
                          str(level.voided), str(level.queued), str(overflow),
                          str(len(level.lots)))
        console.print(table)
        state = await maintenance.load(redis, settings.maintenance)
        throttle = await redis.get(keys.throttle())
        backlog = sum([int(await redis.xlen(keys.stream(s)))
                       for s in range(settings.redis.shards)])
        limits = settings.limits
        fleet = Table(title="fleet", show_header=False)
        fleet.add_column("what")
        fleet.add_column("value")
        rows = [
            ("front doors alive", str(await alive(redis, keys.front_doors(), 3000))),
            ("workers alive", str(await alive(redis, keys.workers(), 5000))),
            ("order-stream backlog", str(backlog)),
            ("global rate", f"{limits.global_.rate:g}/s" if limits.global_ else "unlimited"),
            ("per buyer", f"{limits.per_buyer.rate:g}/s" if limits.per_buyer else "unlimited"),
            ("backpressure", f"throttled to {float(throttle):g}/s" if throttle else "off"),
            ("maintenance", state.mode + (f" ({state.reason})" if state.reason else "")
             + (f" from {state.starts_at}" if state.starts_at else "")),
            ("config sha256", settings.sha256()[:12]),
        ]
        for name, value in rows:
            fleet.add_row(name, value)
        console.print(fleet)
        return 0

    return _with_store(settings, body)


def cmd_maintenance(args: argparse.Namespace) -> int:
    """`kamigate maintenance MODE`: set it for every front door (they follow within a second)."""
    from engine import maintenance

    settings = load_settings(args)
    state = maintenance.MaintenanceState(mode=args.mode, reason=args.reason or "",
                                         eta=args.eta, starts_at=args.starts_at)
    problems = maintenance.check(state)
    if problems:
        for problem in problems:
            print(f"kamigate: {problem}", file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        await maintenance.store(redis, state)
        when = f" from {state.starts_at}" if state.starts_at else ""
        print(f"maintenance {state.mode}{when}" + (f": {state.reason}" if state.reason else ""))
        return 0

    return _with_store(settings, body)
