"""The points ledger: a wallet per (storefront, buyer), on the wallet's own shard.

Points live in lots (one per grant, with its expiry), are spent soonest-expiring first and go
back to the lots they came from. Every movement is one Lua call that keeps the counters and
appends the history together, so promise P1 holds at every quiet point:

    granted - deducted - expired = balance + reserved + spent,   balance >= 0, reserved >= 0

An order's points move in two phases keyed by its order id (DESIGN §8, after TigerBeetle's
pending transfers): reserved at admission (points_take.lua, all or nothing), then spent when
it is fulfilled or given back when it ends otherwise (points_settle.lua), each at most once
whatever is replayed (P2, P4); what it earned is a grant keyed by its order id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis

from engine.clock import rfc3339
from engine.config.settings import Settings
from engine.store import keys, records, scripts
from engine.store.wallet_keys import (
    WalletKeys,
    coupon,
    open_reservations,
    shard_of_wallet,
    wallet,
    wallet_next_expiry,
    wallet_reminders,
    wallets,
)
from engine.wire_wallet import LedgerEntry, PointsExpiring, PointsLot, Wallet

NEVER_MS = 9007199254740991  # the expiry score of a lot that never expires
MAX_PAGE = 200


BUYER_PATTERN = r"^[!-~]{1,128}$"  # the same rule, for the OpenAPI document


def valid_buyer(buyer: str) -> bool:
    """A buyer id a wallet can have: 1-128 visible ASCII characters (an account id, an
    e-mail address, a phone number); other ids may order, without points."""
    return 0 < len(buyer) <= 128 and buyer.isascii() and buyer.isprintable() and " " not in buyer


def member(storefront: str, buyer: str) -> str:
    """The wallet's name in the shard's sets: "<storefront>\\0<buyer>"."""
    return f"{storefront}\0{buyer}"


class Notice(NamedTuple):
    """Whom a wallet's grants are told about: the storefront's events_url, through the
    outbox group ("" = nobody), and how long before a lot expires to remind (0 = never)."""

    group: str = ""
    remind_ms: int = 0


NOBODY = Notice()


def notice(settings: Settings, storefront: str, buyer: str) -> Notice:
    found = next((s for s in settings.storefronts if s.id == storefront), None)
    if found is None or not found.events_url:
        return NOBODY
    return Notice(records.event_group(storefront, buyer),
                  settings.points.remind_before_days * 86_400_000)


def wallet_keys(storefront: str, buyer: str, shards: int) -> tuple[int, WalletKeys]:
    shard = shard_of_wallet(storefront, buyer, shards)
    return shard, wallet(storefront, buyer, shard)


def grant_call(shards: int, storefront: str, buyer: str, points: int, kind: str, reason: str,
               expires_ms: int, now: int, key: str = "", digest: str = "",
               order_id: str = "", tell: Notice = NOBODY) -> scripts.Call:
    """The points_grant.lua call of a grant (a new lot), told to the storefront (`tell`, from
    notice()) with its reminder scheduled."""
    shard, w = wallet_keys(storefront, buyer, shards)
    remind_at = expires_ms - tell.remind_ms if tell.remind_ms and expires_ms else 0
    return (scripts.POINTS_GRANT,
            [w.counts, w.expiries, w.history, w.grant_keys, wallets(shard),
             wallet_next_expiry(shard), keys.outbox(shard), wallet_reminders(shard)],
            [points, kind, reason, expires_ms, now, key, digest, member(storefront, buyer),
             order_id, tell.group, remind_at if remind_at > now else 0])


async def move(redis: Redis, shards: int, storefront: str, buyer: str, points: int,
               kind: str, reason: str, expires_ms: int, now: int, key: str = "",
               digest: str = "", order_id: str = "", tell: Notice = NOBODY
               ) -> tuple[str, str, int]:
    """Grant (points > 0; kind "grant" or "compensation": a new lot) or deduct (points < 0):
    (outcome, entry id, balance); outcome "ok", "replay", "conflict" (the key with another
    body) or "short" (a deduction larger than the unexpired balance: nothing written)."""
    shard, w = wallet_keys(storefront, buyer, shards)
    if points > 0:
        script, names, args = grant_call(shards, storefront, buyer, points, kind, reason,
                                         expires_ms, now, key, digest, order_id, tell)
        found = await script(redis, names, args)
    else:
        found = await scripts.POINTS_TAKE(
            redis, [w.counts, w.expiries, w.reservations, w.history, w.grant_keys,
                    wallets(shard), open_reservations(shard)],
            ["deduct", -points, now, member(storefront, buyer), key, digest, reason])
    return found[0].decode(), found[1].decode(), int(found[2])


def reserve_call(shards: int, storefront: str, buyer: str, order_id: str, points: int,
                 now: int) -> scripts.Call:
    """The points_take.lua call that reserves an order's points (the front door sends it in
    its coalesced pipeline); read its answer with reserved()."""
    shard, w = wallet_keys(storefront, buyer, shards)
    return (scripts.POINTS_TAKE,
            [w.counts, w.expiries, w.reservations, w.history, w.grant_keys,
             wallets(shard), open_reservations(shard)],
            ["reserve", points, now, member(storefront, buyer), order_id, "", ""])


def reserved(found: Any) -> tuple[str, int]:
    """("ok", balance), ("again", 0) when reserved before for this order, or ("short",
    points there are to spend)."""
    outcome = found[0].decode()
    return outcome, int(found[2])


async def reserve(redis: Redis, shards: int, storefront: str, buyer: str, order_id: str,
                  points: int, now: int) -> tuple[str, int]:
    script, names, args = reserve_call(shards, storefront, buyer, order_id, points, now)
    return reserved(await script(redis, names, args))


def settle_call(shards: int, storefront: str, buyer: str, order_id: str, post: bool,
                now: int, coupon_ids: Sequence[str] = ()) -> scripts.Call:
    """The points_settle.lua call that settles an order's points and coupons."""
    shard, w = wallet_keys(storefront, buyer, shards)
    return (scripts.POINTS_SETTLE,
            [w.counts, w.expiries, w.reservations, w.history, open_reservations(shard),
             *(coupon(c, shard) for c in coupon_ids)],
            [order_id, "post" if post else "void", now, member(storefront, buyer)])


async def settle(redis: Redis, shards: int, storefront: str, buyer: str, order_id: str,
                 post: bool, now: int, earn: int = 0, earn_expires_ms: int = 0,
                 tell: Notice = NOBODY, coupon_ids: Sequence[str] = ()) -> tuple[str, int]:
    """Spend (post) or give back (void) the order's reservation — its points and its coupons
    — and, on a post, grant what it earned (once: keyed "earn:<order id>"): (the points
    reservation's state before: "R", "S", "V" or "", points moved)."""
    script, names, args = settle_call(shards, storefront, buyer, order_id, post, now,
                                      coupon_ids)
    found = await script(redis, names, args)
    if post and earn > 0:
        await move(redis, shards, storefront, buyer, earn, "grant", "earned", earn_expires_ms,
                   now, key=f"earn:{order_id}", digest="earn", order_id=order_id, tell=tell)
    return found[0].decode(), int(found[1])


class Settle(NamedTuple):
    """One decided order's points to settle: spend (post) or give back, and what it earned."""

    storefront: str
    buyer: str
    order_id: str
    post: bool
    earn: int = 0
    earn_expires_ms: int = 0
    tell: Notice = NOBODY
    coupons: tuple[str, ...] = ()


async def settle_many(redis: Redis, shards: int, batch: list[Settle], now: int) -> None:
    """settle() for many orders in two round trips: every reservation, then every grant of
    what the posted ones earned (each keyed "earn:<order id>": once, whatever is replayed).
    A call that fails raises after the others ran; each is idempotent, so the whole batch
    may be sent again."""
    calls = [settle_call(shards, i.storefront, i.buyer, i.order_id, i.post, now, i.coupons)
             for i in batch]
    grants = [grant_call(shards, i.storefront, i.buyer, i.earn, "grant", "earned",
                         i.earn_expires_ms, now, key=f"earn:{i.order_id}", digest="earn",
                         order_id=i.order_id, tell=i.tell)
              for i in batch if i.post and i.earn > 0]
    for sent in (calls, grants):
        failed = [r for r in await scripts.run_pipelined(redis, sent) if isinstance(r, Exception)]
        if failed:
            raise failed[0]


async def reserved_coupons(redis: Redis, shards: int, storefront: str, buyer: str,
                           order_id: str) -> list[str]:
    """The ids of the coupons reserved for an order (coupon_take.lua), for a sweep that has
    no record of the order to read them from."""
    _, w = wallet_keys(storefront, buyer, shards)
    found: Any = await redis.hget(w.reservations, f"c:{order_id}")
    return [c for c in (found or b"").decode().split(",") if c]


async def expire_due(redis: Redis, shard: int, now: int, limit: int = 200) -> int:
    """Expire what is due in the shard's wallets; the points expired."""
    due: Any = await redis.zrangebyscore(wallet_next_expiry(shard), "-inf", now,
                                         start=0, num=limit)
    total = 0
    for raw in due:
        storefront, _, buyer = raw.decode().partition("\0")
        w = wallet(storefront, buyer, shard)
        total += int(await scripts.POINTS_EXPIRE(
            redis, [w.counts, w.expiries, w.history, wallet_next_expiry(shard)],
            [now, raw.decode()]))
    return total


async def remind_due(redis: Redis, shard: int, now: int, limit: int = 200) -> int:
    """Send the points.expiring events that are due on the shard (each once); how many."""
    due: Any = await redis.zrangebyscore(wallet_reminders(shard), "-inf", now,
                                         start=0, num=limit)
    sent = 0
    for raw in due:
        storefront, buyer, _ = raw.decode().split("\0", 2)
        w = wallet(storefront, buyer, shard)
        sent += int(await scripts.POINTS_REMIND(
            redis, [wallet_reminders(shard), w.counts, w.expiries, keys.outbox(shard)],
            [raw, now, records.event_group(storefront, buyer)]))
    return sent


async def counters(redis: Redis, shards: int, storefront: str, buyer: str) -> dict[str, int]:
    _, w = wallet_keys(storefront, buyer, shards)
    raw: Any = await redis.hgetall(w.counts)
    return {k.decode(): int(v) for k, v in raw.items() if not k.startswith(b"l:")}


async def view(redis: Redis, shards: int, storefront: str, buyer: str, now: int,
               remind_ms: int) -> Wallet:
    """The wallet as GET /v1/buyers/{buyer}/points shows it (a buyer never seen: empty)."""
    _, w = wallet_keys(storefront, buyer, shards)
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(w.counts)
    pipe.zrangebyscore(w.expiries, f"({now}", "+inf", withscores=True)
    raw, lots = await pipe.execute()
    shown, expiring = [], 0
    for lot, expiry in lots:
        left = int(raw.get(b"l:" + lot, 0))
        if left <= 0:
            continue
        never = int(expiry) >= NEVER_MS
        shown.append(PointsLot(points=left, expires_at=None if never else rfc3339(int(expiry))))
        if not never and expiry <= now + remind_ms:
            expiring += left
    return Wallet(buyer=buyer, balance=int(raw.get(b"balance", 0)),
                  reserved=int(raw.get(b"reserved", 0)), lots=shown,
                  expiring=PointsExpiring(points=expiring, before=rfc3339(now + remind_ms)))


async def history(redis: Redis, shards: int, storefront: str, buyer: str, cursor: str | None,
                  limit: int) -> tuple[list[LedgerEntry], str | None]:
    """Ledger entries, newest first, from `cursor` (an entry id, exclusive) on."""
    _, w = wallet_keys(storefront, buyer, shards)
    top = f"({cursor}" if cursor else "+"
    found: Any = await redis.xrevrange(w.history, top, "-", count=limit + 1)
    entries = [
        LedgerEntry(at=rfc3339(int(f[b"at"])), kind=f[b"k"].decode(), points=int(f[b"p"]),
                    order_id=f[b"o"].decode() or None, reason=f[b"r"].decode())
        for _, f in found[:limit]]
    more = found[limit - 1][0].decode() if len(found) > limit else None
    return entries, more


COUNTERS = ("balance", "reserved", "spent", "granted", "deducted", "expired")


async def totals(redis: Redis, shards: int, now: int, stale_ms: int) -> dict[str, int]:
    """Every wallet's counters summed (balance: points outstanding, owed to buyers;
    reserved: held for orders not yet decided), with `wallets`, `open` (reservations not yet
    settled) and `stale` (of those, reserved more than stale_ms ago)."""
    out = dict.fromkeys(("wallets", *COUNTERS, "open", "stale"), 0)
    for shard in range(shards):
        async for batch in _members(redis, shard):
            pipe = redis.pipeline(transaction=False)
            for name in batch:
                storefront, _, buyer = name.partition("\0")
                pipe.hmget(wallet(storefront, buyer, shard).counts, list(COUNTERS))
            for values in await pipe.execute():
                out["wallets"] += 1
                for name, value in zip(COUNTERS, values, strict=True):
                    out[name] += int(value or 0)
        out["open"] += int(await redis.zcard(open_reservations(shard)))
        out["stale"] += int(await redis.zcount(open_reservations(shard), "-inf",
                                               now - stale_ms))
    return out


async def _members(redis: Redis, shard: int, batch: int = 500) -> Any:
    """The shard's wallets, `batch` at a time (SSCAN: never one reply with them all)."""
    found: list[str] = []
    async for member in redis.sscan_iter(wallets(shard), count=batch):
        found.append(member.decode())
        if len(found) >= batch:
            yield found
            found = []
    if found:
        yield found
