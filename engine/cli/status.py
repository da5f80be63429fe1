"""`kamigate status` and `kamigate reconcile`: what the store holds, and whether the stock
promises hold."""

from __future__ import annotations

import argparse
from typing import Any

from redis.asyncio import Redis

from engine import config
from engine.cli.support import load_settings, with_store
from engine.store import keys, replication, watch_keys
from engine.worker import matching


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    reconcile = commands.add_parser("reconcile", parents=[common], help="check stock invariants")
    reconcile.set_defaults(func=cmd_reconcile)
    status = commands.add_parser("status", parents=[common], help="SKUs, stock and queues")
    status.set_defaults(func=cmd_status)


def cmd_reconcile(args: argparse.Namespace) -> int:
    from engine.stock.reconcile import reconcile
    from engine.wallet.coupon_reconcile import reconcile_coupons
    from engine.wallet.reconcile import reconcile_points

    settings = load_settings(args)

    async def body(redis: Redis) -> int:
        report = await reconcile(redis, settings.redis.shards, [s.id for s in settings.skus])
        points = await reconcile_points(redis, settings.redis.shards)
        coupons = await reconcile_coupons(redis, settings)
        violations = report.violations + points.violations + coupons.violations
        for violation in violations:
            print(f"VIOLATION {violation}")
        print(f"reconcile: {report.skus} SKUs, {report.codes_checked} codes checked, "
              f"{points.wallets} wallets, {points.orders_checked} orders with points checked, "
              f"{coupons.coupons} coupons, {len(violations)} violations")
        return 0 if not violations else 1

    return with_store(settings, body)


def cmd_status(args: argparse.Namespace) -> int:
    """SKUs, stock, lines, the fleet and the switches in force, as tables."""
    from rich.console import Console
    from rich.table import Table

    from engine.controls import maintenance
    from engine.stock import lots
    from engine.store.heartbeat import alive

    file_settings = load_settings(args)

    async def body(redis: Redis) -> int:
        running = await _running(redis, file_settings)
        settings = running.settings
        found = await lots.levels(redis, settings.redis.shards, [s.id for s in settings.skus])
        console = Console()
        table = Table(title=f"kamigate — {matching.describe()}")
        columns = ("SKU", "available", "held", "issued", "voided", "expired", "sold out",
                   "overflow", "lots")  # the last three: tickets in those lines, and lots
        for column in columns:
            table.add_column(column, justify="left" if column == "SKU" else "right",
                             no_wrap=column == "SKU")
        for level in found:
            table.add_row(level.sku, str(level.available), str(level.held), str(level.issued),
                          str(level.voided), str(level.expired), str(level.waiting.sold_out),
                          str(level.waiting.overflow), str(len(level.lots)))
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
            *((f"maintenance ({scope})", f"{m.mode}" + (f" ({m.reason})" if m.reason else ""))
              for scope, m in (await maintenance.load_scoped(redis)).items()),
            ("dead-lettered stream entries", str(sum([
                int(await redis.xlen(keys.dead_letter(s)))
                for s in range(settings.redis.shards)]))),
            ("archived orders not yet exported", str(sum([
                int(await redis.xlen(keys.archive(s)))
                for s in range(settings.redis.shards)]))),
            ("waiting for review", str(sum([int(await redis.zcard(keys.review_line(s)))
                                            for s in range(settings.redis.shards)]))),
            ("surge", "on" if (await redis.get(watch_keys.surge())) == b"start" else "off"),
            ("replicas per master", await _replicas(redis, settings.redis.wait_replicas)),
            ("config", f"version {running.version}, sha256 {running.sha256[:12]}"
             + (f" ({running.origin} by {running.by})" if running.by else "")),
        ]
        for name, value in rows:
            fleet.add_row(name, value)
        console.print(fleet)
        if settings.points.enabled:
            console.print(await _points_table(redis, settings))
        console.print(await _pause_table(redis, settings))
        if settings.suppliers:
            console.print(await _supplier_table(redis, settings))
        return 0

    return with_store(file_settings, body)


async def _running(redis: Redis, settings: config.Settings) -> Any:
    """The fleet's running config (live changes included), else the file's."""
    from engine.config.live import Running, read
    from engine.config.redaction import public_sha256

    try:
        found = await read(redis)
    except config.ConfigError:
        found = None
    return found or Running(0, public_sha256(settings), settings, {})


async def _points_table(redis: Redis, settings: config.Settings) -> Any:
    from rich.table import Table

    from engine.clock import now_ms
    from engine.wallet import ledger
    from engine.worker.settlement import GRACE_MS

    found = await ledger.totals(redis, settings.redis.shards, now_ms(), GRACE_MS)
    table = Table(title="points", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    for name, value in (
        ("wallets", found["wallets"]),
        ("outstanding (balance owed to buyers)", found["balance"]),
        ("reserved for undecided orders", found["reserved"]),
        ("spent", found["spent"]),
        ("granted", found["granted"]),
        ("deducted", found["deducted"]),
        ("expired", found["expired"]),
        ("reservations not yet settled", found["open"]),
        (f"  of those, older than {GRACE_MS // 60_000} min", found["stale"]),
    ):
        table.add_row(name, f"{value:,}")
    return table


async def _pause_table(redis: Redis, settings: config.Settings) -> Any:
    from datetime import UTC, datetime

    from rich.table import Table

    from engine.controls import pauses

    board = pauses.PauseBoard()
    board.refresh(settings, await pauses.load(redis))
    listing = pauses.listing(board, settings, datetime.now(UTC))
    table = Table(title="pauses")
    for column in ("scope", "state", "reason", "until / from", "source"):
        table.add_column(column)
    for p in listing["active"]:
        table.add_row(p["scope"], f"paused ({p['action']})", p["reason"],
                      p["until"] or "until resumed", p["source"])
    for w in listing["scheduled"][:10]:
        table.add_row(w["scope"], "scheduled", w["reason"], f"{w['starts_at']} → "
                      f"{w['ends_at'] or 'open'}", w["source"])
    if not listing["active"] and not listing["scheduled"]:
        table.add_row("—", "none", "", "", "")
    return table


async def _supplier_table(redis: Redis, settings: config.Settings) -> Any:
    from rich.table import Table

    from engine.clock import rfc3339
    from engine.stock import supplies

    found = {(s.supplier, s.sku): s
             for s in await supplies.everything(redis, settings.redis.shards)}
    table = Table(title="suppliers")
    for column in ("supplier", "SKU", "last success", "codes received", "batches",
                   "failures (in a row)", "last error"):
        table.add_column(column)
    for supplier in settings.suppliers:
        for sku in supplier.skus:
            state = found.get((supplier.id, sku))
            if state is None:
                table.add_row(supplier.id, sku, "never asked", "0", "0", "0", "")
                continue
            table.add_row(supplier.id, sku,
                          rfc3339(state.last_success_ms) if state.last_success_ms else "never",
                          f"{state.codes_received:,}", str(state.batches),
                          f"{state.failed} ({state.failures})", state.last_error)
    return table


async def _replicas(redis: Redis, wanted: int) -> str:
    """Connected replicas per master, and what [redis] wait_replicas asks of them."""
    found = await replication.replicas_per_master(redis)
    text = ", ".join(str(n) for n in found)
    if not wanted:
        return f"{text} (answers do not wait for them)"
    short = sum(n < wanted for n in found)
    return f"{text} (answers wait for {wanted}" + (
        f"; {short} master{'s' if short > 1 else ''} short of it: their writes answer 503)"
        if short else ")")
