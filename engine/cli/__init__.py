"""The `kamigate` command: one module of engine.cli per command group."""

from __future__ import annotations

import argparse
import logging
import os

from engine import __version__
from engine.cli import (
    config_tools,
    export,
    redis_acl,
    run,
    sealing_keys,
    status,
    stock,
    switches,
)

GROUPS = (run, stock, config_tools, switches, sealing_keys, redis_acl, status, export)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="kamigate", description="The `kamigate` command.")
    top.add_argument("--version", action="version", version=f"kamigate {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $KAMIGATE_CONFIG, ./kamigate.toml)")
    commands = top.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(commands, common)
    return top


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("KAMIGATE_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result
