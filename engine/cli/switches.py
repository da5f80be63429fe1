"""The operator's switches from the command line: maintenance, pause and resume. Each is
kept in Redis, so every front door and worker follows within a second, and audited."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec
from redis.asyncio import Redis

from engine import config
from engine.cli.support import load_settings, with_store
from engine.store import audit
from engine.wire import MAX_REASON


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    maint = commands.add_parser(
        "maintenance", parents=[common],
        help="close order writes (read_only), everything (full), or reopen")
    maint.add_argument("mode", choices=["off", "read_only", "full"])
    maint.add_argument("--reason", help="shown to storefronts and buyers")
    maint.add_argument("--eta", help="when it ends (RFC 3339); sets Retry-After")
    maint.add_argument("--starts-at", help="schedule it (RFC 3339); announced beforehand")
    maint.add_argument("--scope", default="global",
                       help="global (default), storefront:<id> or sku:<id>")
    maint.add_argument("--action", choices=["reject", "queue"], default="reject",
                       help="new orders meanwhile: 503 (reject, default) or tickets served "
                            "in line order when it ends (queue)")
    maint.set_defaults(func=cmd_maintenance)
    pause = commands.add_parser(
        "pause", parents=[common],
        help="pause automatic delivery for a scope (orders queue meanwhile)")
    pause.add_argument("scope", help="global, storefront:<id> or sku:<id>")
    pause.add_argument("--reason", default="", help="shown to buyers")
    pause.add_argument("--until", help="when it ends by itself (RFC 3339)")
    pause.add_argument("--action", choices=["queue", "reject"], default="queue",
                       help="what orders for the scope get meanwhile")
    pause.add_argument("--exempt-tier", type=int, action="append", default=[],
                       choices=range(10), metavar="TIER",
                       help="orders of this tier (0-9) are still served; repeatable")
    pause.set_defaults(func=cmd_pause)
    resume = commands.add_parser(
        "resume", parents=[common],
        help="resume automatic delivery for a scope; the line is served")
    resume.add_argument("scope")
    resume.set_defaults(func=cmd_resume)


def cmd_maintenance(args: argparse.Namespace) -> int:
    """`kamigate maintenance MODE`: set it for every front door (they follow within a second)."""
    from engine.controls import maintenance

    settings = load_settings(args)
    state = maintenance.MaintenanceState(mode=args.mode, reason=args.reason or "",
                                         eta=args.eta, starts_at=args.starts_at,
                                         scope=args.scope, action=args.action)
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
    from engine.clock import parse_rfc3339
    from engine.controls import pauses

    settings = load_settings(args)
    problem = _scope_problem(settings, args.scope)
    if problem is None and args.until is not None:
        try:
            parse_rfc3339(args.until)
        except ValueError as exc:
            problem = f"until: {exc}"
    if problem is None and len(args.reason) > MAX_REASON:
        problem = f"reason: at most {MAX_REASON} characters (buyers see it on every answer)"
    if problem:
        print(f"kamigate: {problem}", file=sys.stderr)
        return 1

    async def body(redis: Redis) -> int:
        tiers = tuple(sorted(set(args.exempt_tier)))
        await pauses.pause(redis, args.scope, args.reason, args.until, args.action, "cli",
                           tiers)
        await audit.record(redis, "cli", "pause", {"scope": args.scope, "reason": args.reason,
                                                   "until": args.until, "action": args.action,
                                                   "exempt_tiers": list(tiers)})
        print(f"paused {args.scope} ({args.action})"
              + (f" until {args.until}" if args.until else " until resumed"))
        return 0

    return with_store(settings, body)


def cmd_resume(args: argparse.Namespace) -> int:
    from engine.controls import pauses

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
