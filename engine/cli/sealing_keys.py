"""`kamigate keys new` and `kamigate keys rotate`: the keys that seal codes at rest."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from redis.asyncio import Redis

from engine.cli.support import load_settings, with_store
from engine.store import audit


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    keys = commands.add_parser("keys", help="keys that seal codes at rest ([codes])")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    actions.add_parser("new", help="print a new random key").set_defaults(func=cmd_keys_new)
    actions.add_parser("rotate", parents=[common],
                       help="reseal the stock with [codes] current, online").set_defaults(
        func=cmd_keys_rotate)


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a new random key for `[codes] keys` (32 bytes, base64)."""
    import base64
    import secrets

    print(base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Reseal the stock with `[codes] current`, online, with a progress bar."""
    from rich.progress import Progress

    from engine.config.directory import Directory
    from engine.stock.rotate import rotate

    settings = load_settings(args)
    sealer = Directory(settings).sealer
    if not sealer.enabled:
        print("kamigate: no [codes] keys are configured: codes are stored as imported",
              file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        skus = sorted({s.id for s in settings.skus})
        total = 0
        with Progress(transient=True) as bar:
            task = bar.add_task(f"resealing with key {sealer.current}", total=None)
            done = await rotate(redis, sealer, settings.redis.shards, skus,
                                lambda n: bar.advance(task, n))
        total = sum(done.values())
        await audit.record(redis, "cli", "keys.rotate", {"current": sealer.current,
                                                         "resealed": done})
        print(f"resealed {total} codes with key {sealer.current}: "
              + ", ".join(f"{sku} {n}" for sku, n in done.items()))
        return 0

    return with_store(settings, body)
