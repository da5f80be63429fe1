"""Acknowledged means replicated: `[redis] wait_replicas = N` makes kamigate show nothing it
wrote (an admission's answer, a claim's codes, a record's codes, a webhook) before N replicas
of the master hold it (Redis WAIT).

WAIT counts the replicas that hold everything the asking connection wrote, so it goes in the
same pipeline as the writes it covers (one connection). Where the writes came from elsewhere
(a record read from the master, an outbox entry), a fence writes a counter of the shard and
WAITs on that write: replication keeps the master's order, so a replica holding the fence holds
everything before it. A short count raises NotReplicated, a ConnectionError: to a caller it is
a reply lost after the server applied the call, which every caller already survives (the
door answers 503 and a retry with the same Idempotency-Key finds the order; the worker reads
the shard again).

The policy belongs to a client (set at connect), so that one process may hold clients of
different deployments.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException


@dataclass(frozen=True, slots=True)
class Policy:
    replicas: int
    timeout_ms: int


class NotReplicated(RedisConnectionError):
    """Fewer replicas than wait_replicas acknowledged the writes within wait_timeout_ms."""

    def __init__(self, acknowledged: int, policy: Policy) -> None:
        super().__init__(f"{acknowledged} of {policy.replicas} replicas acknowledged within "
                         f"{policy.timeout_ms} ms")
        self.acknowledged = acknowledged


_POLICIES: weakref.WeakKeyDictionary[Any, Policy] = weakref.WeakKeyDictionary()


def require(client: Redis, replicas: int, timeout_ms: int) -> None:
    """From now on, `client`'s script calls and fences wait for `replicas` replicas."""
    if replicas > 0:
        _POLICIES[client] = Policy(replicas, timeout_ms)
    else:
        _POLICIES.pop(client, None)


def policy(client: Redis) -> Policy | None:
    return _POLICIES.get(client)


def _master(client: RedisCluster, slot_key: str | bytes) -> Any:
    try:
        return client.get_node_from_key(
            slot_key.decode() if isinstance(slot_key, bytes) else slot_key)
    except RedisClusterException as exc:  # the slots are being learnt again (a failover)
        raise RedisConnectionError(f"no master known for {slot_key!r} yet: {exc}") from None


def add_wait(pipe: Any, client: Redis, slot_key: str | bytes, wanted: Policy) -> None:
    """Append WAIT to `pipe`, on the connection of the master serving `slot_key`."""
    if isinstance(client, RedisCluster):
        node = _master(client, slot_key)
        pipe.execute_command("WAIT", wanted.replicas, wanted.timeout_ms, target_nodes=node)
    else:
        pipe.execute_command("WAIT", wanted.replicas, wanted.timeout_ms)


def check(acknowledged: Any, wanted: Policy) -> None:
    if isinstance(acknowledged, Exception):
        raise acknowledged
    if int(acknowledged) < wanted.replicas:
        raise NotReplicated(int(acknowledged), wanted)


def nodes_of(client: Redis, slot_keys: list[str | bytes]) -> list[str | bytes]:
    """One key per master among `slot_keys` (one WAIT per connection is enough)."""
    if not isinstance(client, RedisCluster):
        return slot_keys[:1]
    seen: dict[str, str | bytes] = {}
    for key in slot_keys:
        seen.setdefault(_master(client, key).name, key)
    return list(seen.values())


async def replicas_per_master(client: Redis) -> list[int]:
    """How many replicas each master has connected (one server: a list of one)."""
    if isinstance(client, RedisCluster):
        found: Any = await client.info("replication", target_nodes=RedisCluster.PRIMARIES)
        return sorted(int(info.get("connected_slaves", 0)) for info in found.values())
    info: Any = await client.info("replication")
    return [int(info.get("connected_slaves", 0))]


async def fence(client: Redis, fence_key: str) -> None:
    """Return once the replicas hold everything the master of `fence_key` did before this
    call (a no-op without a policy); raise NotReplicated when they do not in time."""
    wanted = _POLICIES.get(client)
    if wanted is None:
        return
    pipe = client.pipeline(transaction=False)
    pipe.execute_command("INCR", fence_key)
    add_wait(pipe, client, fence_key, wanted)
    found = await pipe.execute(raise_on_error=False)
    check(found[0] if isinstance(found[0], Exception) else found[1], wanted)
