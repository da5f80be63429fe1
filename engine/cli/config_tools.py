"""`kamigate config check` and `kamigate config diff`: a config file before it goes live."""

from __future__ import annotations

import argparse
from typing import Any

from engine.cli.support import config_path, load_file, try_load
from engine.config.diff import diff
from engine.config.live import restart_needed
from engine.config.redaction import public_sha256


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    cfg = commands.add_parser("config", help="config tools")
    actions = cfg.add_subparsers(dest="config_command", required=True)
    check = actions.add_parser("check", parents=[common], help="validate a config file")
    check.add_argument("file", nargs="?")
    check.set_defaults(func=cmd_config_check)
    changes = actions.add_parser("diff", help="what changes between two config files, and "
                                 "whether a live reload can apply it")
    changes.add_argument("old")
    changes.add_argument("new")
    changes.set_defaults(func=cmd_config_diff)


def cmd_config_check(args: argparse.Namespace) -> int:
    path = args.file or config_path(args)
    settings = load_file(path)
    print(f"{path}: ok ({len(settings.skus)} SKUs, {len(settings.storefronts)} storefronts, "
          f"sha256 {public_sha256(settings)[:12]})")
    return 0


def cmd_config_diff(args: argparse.Namespace) -> int:
    """Print the diff; 0 when both files are usable (changed or not), 1 when either is not."""
    old, new = try_load(args.old), try_load(args.new)
    if old is None or new is None:
        return 1
    lines = diff(old, new)
    if not lines:
        print("no changes")
        return 0
    for line in lines:
        print(line)
    restart = restart_needed(old, new)
    count = f"{len(lines)} change{'s' if len(lines) != 1 else ''}"
    if restart:
        keys = ", ".join(p.partition(":")[0] for p in restart)
        print(f"{count}; a restart is needed for: {keys} (a live reload refuses this file)")
    else:
        print(f"{count}; a live reload can apply this (PUT /admin/config, "
              "POST /admin/config/reload, SIGHUP or a file edit)")
    return 0
