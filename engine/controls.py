"""The operator's switches from the command line: maintenance, pause and resume. Each is
kept in Redis, so every front door and worker follows within a second, and audited."""

from __future__ import annotations

import argparse
import sys

import msgspec
from redis.asyncio import Redis

from engine import audit, config
from engine.cli_support import load_settings
from engine.commands import with_store


def cmd_maintenance(args: argparse.Namespace) -> int:
    """`kamigate maintenance MODE`: set it for every front door (they follow within a second)."""
    from engine import maintenance

    settings = load_settings(args)
    state = maintenance.MaintenanceState(mode=args.mode, reason=args.reason or "",
                                         eta=args.eta, starts_at=args.starts_at,
                                         scope=args.scope)
    problems = maintenance.check(state)
    if problems:
        for problem in problems:
            print(f"kamigate: {problem}", file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        await maintenance.store(redis, state)
        await audit.record(redis, "cli", "maintenance", msgspec.to_builtins(state))
        when = f" from {state.starts_at}" if state.starts_at else ""
        scope = "" if state.scope == "global" else f" for {state.scope}"
        print(f"maintenance {state.mode}{scope}{when}"
              + (f": {state.reason}" if state.reason else ""))
        return 0

    return with_store(settings, body)


def _scope_problem(settings: config.Settings, scope: str) -> str | None:
    kind, _, name = scope.partition(":")
    if scope == "global" or (kind == "sku" and name in {s.id for s in settings.skus}) or (
            kind == "storefront" and name in {s.id for s in settings.storefronts}):
        return None
    return f"scope: {scope!r} is not 'global', a configured 'storefront:<id>' or 'sku:<id>'"


def cmd_pause(args: argparse.Namespace) -> int:
    """`kamigate pause SCOPE`: every front door and worker follows within a second."""
    from engine import pauses
    from engine.clock import parse_rfc3339

    settings = load_settings(args)
    problem = _scope_problem(settings, args.scope)
    if problem is None and args.until is not None:
        try:
            parse_rfc3339(args.until)
        except ValueError as exc:
            problem = f"until: {exc}"
    if problem:
        print(f"kamigate: {problem}", file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        await pauses.pause(redis, args.scope, args.reason, args.until, args.action, "cli")
        await audit.record(redis, "cli", "pause", {"scope": args.scope, "reason": args.reason,
                                                   "until": args.until, "action": args.action})
        print(f"paused {args.scope} ({args.action})"
              + (f" until {args.until}" if args.until else " until resumed"))
        return 0

    return with_store(settings, body)


def cmd_resume(args: argparse.Namespace) -> int:
    from engine import pauses

    settings = load_settings(args)
    problem = _scope_problem(settings, args.scope)
    if problem:
        print(f"kamigate: {problem}", file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        board = pauses.PauseBoard()
        board.refresh(settings, await pauses.load(redis))
        entry = await pauses.resume(redis, board, settings, args.scope, "cli")
        if entry is None:
            print(f"kamigate: {args.scope} is not paused", file=sys.stderr)
            return 1
        await audit.record(redis, "cli", "resume", {"scope": args.scope})
        print(f"resumed {args.scope}; waiting orders are served now")
        return 0

    return with_store(settings, body)


def cmd_keys_new(args: argparse.Namespace) -> int:
    """Print a new random key for `[codes] keys` (32 bytes, base64)."""
    import base64
    import secrets

    print(base64.b64encode(secrets.token_bytes(32)).decode())
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """Reseal the stock with `[codes] current`, online, with a progress bar."""
    from rich.progress import Progress

    from engine.directory import Directory
    from engine.rotate import rotate

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
