"""The Lua script registry: EVALSHA, and on NOSCRIPT load then retry (also inside pipelines)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from engine.store import replication

KeyArg = str | bytes
Arg = str | bytes | int | float


class Script:
    """One Lua file of engine/lua, known by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.source = resources.files("engine.lua").joinpath(f"{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    async def load(self, client: Redis) -> None:
        await client.script_load(self.source)

    async def __call__(self, client: Redis, keys: Sequence[KeyArg], args: Sequence[Arg]) -> Any:
        if replication.policy(client) is not None:
            [result] = await run_pipelined(client, [(self, keys, args)])
            if isinstance(result, Exception):
                raise result
            return result
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL with the source cannot miss the cache (and fills it again), even when the
            # cache is flushed once more between a SCRIPT LOAD and the retry.
            return await client.eval(self.source, len(keys), *keys, *args)


Call = tuple[Script, Sequence[KeyArg], Sequence[Arg]]


async def run_pipelined(client: Redis, calls: Sequence[Call]) -> list[Any]:
    """Send many script calls in one round trip; results (or exceptions) in call order.

    A flushed script cache only costs one more round trip: the calls that hit NOSCRIPT never
    ran, and are sent again with their source (EVAL), which cannot miss the cache. With a
    replication policy (engine/store/replication.py) the pipeline ends with a WAIT per master,
    and every call of a pipeline the replicas did not acknowledge answers NotReplicated.
    """
    if len(calls) == 1 and replication.policy(client) is None:
        # One call (the common tick: one shard): no pipeline object to build and unwind.
        script, keys, args = calls[0]
        try:
            return [await script(client, keys, args)]
        except ResponseError as exc:
            return [exc]
    results = await _send(client, calls, by_source=False)
    missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
    if missing:
        again = await _send(client, [calls[i] for i in missing], by_source=True)
        for i, result in zip(missing, again, strict=True):
            results[i] = result
    return results


async def _send(client: Redis, calls: Sequence[Call], by_source: bool) -> list[Any]:
    wanted = replication.policy(client)
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        # execute_command: redis-py's cluster pipeline refuses its eval methods, yet routes
        # EVAL and EVALSHA by their keys' slot when they come this way
        if by_source:
            pipe.execute_command("EVAL", script.source, len(keys), *keys, *args)
        else:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
    if wanted is None:
        return list(await pipe.execute(raise_on_error=False))
    masters = replication.nodes_of(client, [keys[0] for _, keys, _ in calls if keys])
    for slot_key in masters:
        replication.add_wait(pipe, client, slot_key, wanted)
    found = list(await pipe.execute(raise_on_error=False))
    results = found[:len(calls)]
    try:
        for acknowledged in found[len(calls):]:
            replication.check(acknowledged, wanted)
    except RedisError as exc:
        results = [r if isinstance(r, Exception) else exc for r in results]
    return results


ADMIT = Script("admit")
IDEMPOTENCY = Script("idempotency")
CLAIM = Script("claim")
IMPORT = Script("import")
UNWIND = Script("unwind")
LEASE = Script("lease")
CONFIRM = Script("confirm")
VOID = Script("void")
RELEASE = Script("release")
TAKE = Script("take")
CONFIG = Script("config")
UNPARK = Script("unpark")
REVIEW = Script("review")
RESEAL = Script("reseal")
DEAD_LETTER = Script("dead_letter")
POINTS_GRANT = Script("points_grant")
POINTS_TAKE = Script("points_take")
POINTS_SETTLE = Script("points_settle")
POINTS_EXPIRE = Script("points_expire")
POINTS_REMIND = Script("points_remind")
ORDER_DELAY = Script("order_delay")
COUPON_ISSUE = Script("coupon_issue")
COUPON_SLOT = Script("coupon_slot")
COUPON_REVOKE = Script("coupon_revoke")
COUPON_SEEN = Script("coupon_seen")
COUPON_TAKE = Script("coupon_take")
COUPON_READ = Script("coupon_read")
COUPON_EXPIRE = Script("coupon_expire")
COUPON_REMIND = Script("coupon_remind")
ABANDON = Script("abandon")
STOCK_EXPIRE = Script("stock_expire")
STOCK_LOW = Script("stock_low")
PAUSE_MARK = Script("pause_mark")
RETIRE = Script("retire")
