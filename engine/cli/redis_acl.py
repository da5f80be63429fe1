"""Least-privilege Redis users for a kamigate deployment: `kamigate redis-acl` prints them.

Every role sees only kamigate's keys (`kg:*`) and channels, and no @dangerous or @admin
command (no FLUSHALL, KEYS, CONFIG, DEBUG, SHUTDOWN, ACL, ...). The front door cannot consume
the order streams; the worker can; the admin role (the `kamigate` command line: imports,
reconcile, status, maintenance, pauses) has both. Scripts run with the caller's rights. The
same users work on every node of a Redis Cluster (created on each: ACLs are per node).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# INFO is @dangerous (it describes the server), but the engine checks AOF and the eviction
# policy with it at start: allowed after the category is taken away. On a Redis Cluster the
# client learns the slots' owners and the cluster's health with CLUSTER SLOTS, NODES, INFO.
BASE = ["on", "resetkeys", "~kg:*", "resetchannels", "&kg:*", "-@all", "+@connection",
        "+@read", "+@write", "+@pubsub", "+@scripting", "-@dangerous", "-@admin", "+info",
        "+cluster|slots", "+cluster|nodes", "+cluster|info"]
CONSUMER = ["+xreadgroup", "+xack", "+xautoclaim", "+xclaim", "+xgroup"]
NOT_CONSUMER = ["-xreadgroup", "-xack", "-xautoclaim", "-xclaim", "-xgroup"]
ROLES: dict[str, list[str]] = {
    "kamigate-door": [*BASE, *NOT_CONSUMER],
    "kamigate-worker": [*BASE, *CONSUMER],
    "kamigate-admin": [*BASE, *CONSUMER],
}


def register(commands: Any, common: argparse.ArgumentParser) -> None:
    acl = commands.add_parser("redis-acl", help="print least-privilege Redis users (ACL "
                              "SETUSER lines) for the front door, the worker and the operator")
    acl.set_defaults(func=cmd_redis_acl)


def rules(user: str, password: str) -> list[str]:
    """The ACL SETUSER arguments for one role (password in clear: Redis hashes it)."""
    return [user, "reset", *ROLES[user], f">{password}"]


def script(passwords: dict[str, str]) -> str:
    """redis-cli lines that create every role."""
    return "\n".join("ACL SETUSER " + " ".join(rules(user, passwords[user]))
                     for user in ROLES) + "\n"


def cmd_redis_acl(args: argparse.Namespace) -> int:
    print("# Passwords from KAMIGATE_REDIS_PASSWORD_<ROLE> where set; put each user in the")
    print("# redis.url of its process: redis://kamigate-door:<password>@host:6379/0")
    print("# On a Redis Cluster users are per node: run these on every master and replica.")
    passwords = {user: os.environ.get(
        "KAMIGATE_REDIS_PASSWORD_" + user.split("-")[1].upper(), "<password>")
        for user in ROLES}
    print(script(passwords), end="")
    return 0
