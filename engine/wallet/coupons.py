"""Coupons: issued from a template to one buyer at one storefront, kept on the buyer's wallet
shard, named by the digest of their code.

A coupon's code is a secret like a card code: 120 random bits from the OS's CSPRNG, prefixed
with the shard it lives on; Redis keeps it sealed when `[codes]` keys are set, and it is
named in key names only by its digest (unkeyed blake2b: a 120-bit random value cannot be
guessed back from it). Its terms are copied from the template when it is issued.

Limits (promise K2): a template's `total` is one counter with a hash tag of its own
(coupon_slot.lua), taken before the coupon is written and given back when the issue does not
happen; `per_buyer` is counted in the wallet by the same script that writes the coupon
(coupon_issue.lua). So no concurrency over-issues either.

    field  what
    c      the code, as stored (sealed with the storefront as its lot)
    t      template; k, a, pc, md, ms, skus, cat, stk, rp: its terms (kind, amount, percent,
           max_discount, min_spend, SKUs comma-joined, category, stackable 1/0,
           recycle_points)
    sf, b  storefront, buyer
    st     active, reserved, redeemed, expired, revoked
    at     issued (unix ms); vf, vu: valid from, valid until (unix ms); u: last change
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from engine.clock import parse_rfc3339, rfc3339
from engine.config.settings import CouponTemplate, Settings
from engine.store import keys, records, scripts
from engine.store.sealing import Sealer
from engine.store.wallet_keys import (
    coupon,
    coupon_reminders,
    coupons_expiring,
    open_reservations,
    shard_of_wallet,
    template_issued,
    wallet,
    wallets,
)
from engine.views import CodeOpener
from engine.wallet import ledger
from engine.wallet.ledger import member
from engine.wire_wallet import Coupon

DAY_MS = 86_400_000
SEALED_AS = "coupon"  # the "SKU" a coupon code is sealed under; its lot: the storefront


def new_code(shard: int) -> str:
    """"CP" + the shard (4 hex digits) + 24 base32 characters (120 random bits)."""
    tail = base64.b32encode(secrets.token_bytes(15)).decode()
    return f"CP{shard:04X}{tail}"


def coupon_id(code: str) -> str:
    return hashlib.blake2b(code.encode(), digest_size=16).hexdigest()


def shard_of_code(code: str, shards: int) -> int | None:
    """The shard a code names, or None for a string that is not one of ours."""
    if len(code) != 30 or not code.startswith("CP"):
        return None
    try:
        shard = int(code[2:6], 16)
        base64.b32decode(code[6:])
    except ValueError:
        return None
    return shard if shard < shards else None


def validity(template: CouponTemplate, now: int) -> tuple[int, int]:
    """(valid from, valid until) of a coupon issued now, unix ms."""
    start = max(now, parse_rfc3339(template.valid_from)) if template.valid_from else now
    ends = [start + template.valid_days * DAY_MS] if template.valid_days else []
    if template.valid_until:
        ends.append(parse_rfc3339(template.valid_until))
    return start, min(ends)


Run = Callable[[scripts.Call], Awaitable[Any]]


def direct(redis: Redis) -> Run:
    """Run each script call on its own (the front door passes its coalesced pipeline)."""
    async def run(call: scripts.Call) -> Any:
        script, names, args = call
        return await script(redis, names, args)
    return run


async def issue(run: Run, settings: Settings, sealer: Sealer, storefront: str, buyer: str,
                template: CouponTemplate, now: int, key: str = "", digest: str = ""
                ) -> tuple[str, str, Coupon | None]:
    """Issue one coupon: (outcome, coupon id, the coupon when issued now); outcome "ok",
    "replay", "conflict", "limit" (per_buyer or total reached: nothing issued) or "ended"
    (the template's validity is over)."""
    shard = shard_of_wallet(storefront, buyer, settings.redis.shards)
    w = wallet(storefront, buyer, shard)
    start, until = validity(template, now)
    if until <= now:
        return "ended", "", None
    slot = template.total > 0 and not (
        key and await run((scripts.COUPON_SEEN, [w.grant_keys], [key])))
    if slot and not await run((scripts.COUPON_SLOT, [template_issued(template.id)],
                               ["take", template.total])):
        return "limit", "", None
    code = new_code(shard)
    events = any(s.id == storefront and s.events_url for s in settings.storefronts)
    found: Any = await run((scripts.COUPON_ISSUE,
        [w.grant_keys, w.coupons, coupon(coupon_id(code), shard), coupons_expiring(shard),
         keys.outbox(shard), wallets(shard), coupon_reminders(shard)],
        [template.id, template.per_buyer, key, digest, now, coupon_id(code),
         sealer.seal(SEALED_AS, storefront, code), start, until,
         records.event_group(storefront, buyer) if events else "", member(storefront, buyer),
         template.kind, template.amount, template.percent, template.max_discount,
         template.min_spend, ",".join(template.skus), template.category,
         int(template.stackable), template.recycle_points,
         until - template.remind_before_days * DAY_MS if template.remind_before_days else 0]))
    outcome = found[0].decode()
    if outcome != "ok" and slot:
        await run((scripts.COUPON_SLOT, [template_issued(template.id)], ["give", 0]))
    made = Coupon(code=code, template=template.id, kind=template.kind, amount=template.amount,
                  percent=template.percent, min_spend=template.min_spend,
                  max_discount=template.max_discount, valid_from=rfc3339(start),
                  valid_until=rfc3339(until), status="active") if outcome == "ok" else None
    return outcome, found[1].decode(), made


def read_call(shards: int, storefront: str, buyer: str, codes: list[str]) -> scripts.Call:
    """The coupon_read.lua call that reads an order's coupons as they are now; a code of
    another shard than the buyer's wallet is no coupon of this buyer (an empty key)."""
    shard = shard_of_wallet(storefront, buyer, shards)
    return (scripts.COUPON_READ,
            [coupon(coupon_id(c), shard) if shard_of_code(c, shards) == shard
             else coupon("none", shard) for c in codes], [])


def take_call(shards: int, storefront: str, buyer: str, order_id: str,
              coupon_ids: Sequence[str], now: int) -> scripts.Call:
    """The coupon_take.lua call that reserves an order's coupons, all or none."""
    shard = shard_of_wallet(storefront, buyer, shards)
    w = wallet(storefront, buyer, shard)
    return (scripts.COUPON_TAKE,
            [w.reservations, open_reservations(shard), *(coupon(c, shard) for c in coupon_ids)],
            [order_id, now, member(storefront, buyer), ",".join(coupon_ids)])


RECHECK_MS = 60_000  # a coupon reserved by an undecided order: looked at again this late


async def sweep(redis: Redis, settings: Settings, shard: int, now: int, limit: int = 200
                ) -> int:
    """End the shard's coupons whose validity is over — recycling their points into the
    wallet first (a grant keyed "recycle:<coupon id>": once) — and send the coupon.expiring
    reminders that are due; coupons ended."""
    ended = 0
    due: Any = await redis.zrangebyscore(coupons_expiring(shard), "-inf", now, start=0,
                                         num=limit)
    for raw in due:
        found = raw.decode()
        fields: Any = await redis.hmget(coupon(found, shard), ["st", "rp", "sf", "b"])
        status, recycle = (fields[0] or b"").decode(), int(fields[1] or 0)
        if recycle and status in ("active", "expired") and settings.points.enabled:
            storefront, buyer = fields[2].decode(), fields[3].decode()
            days = settings.points.expire_after_days
            await ledger.move(redis, settings.redis.shards, storefront, buyer, recycle,
                              "grant", "recycled coupon", now + days * DAY_MS if days else 0,
                              now, key=f"recycle:{found}", digest="recycle",
                              tell=ledger.notice(settings, storefront, buyer))
        before: Any = await scripts.COUPON_EXPIRE(
            redis, [coupons_expiring(shard), coupon(found, shard)], [found, now,
                                                                     now + RECHECK_MS])
        ended += before == b"active"
    reminders: Any = await redis.zrangebyscore(coupon_reminders(shard), "-inf", now, start=0,
                                               num=limit)
    for raw in reminders:
        fields = await redis.hmget(coupon(raw.decode(), shard), ["sf", "b"])
        if fields[0] is None:
            await redis.zrem(coupon_reminders(shard), raw)
            continue
        storefront, buyer = fields[0].decode(), fields[1].decode()
        await scripts.COUPON_REMIND(
            redis, [coupon_reminders(shard), coupon(raw.decode(), shard), keys.outbox(shard)],
            [raw, now, records.event_group(storefront, buyer), member(storefront, buyer)])
    return ended


def view(fields: dict[bytes, bytes], sealer: CodeOpener, now: int) -> Coupon:
    """A coupon as the API shows it; an active one past its validity shows as expired, one
    sealed with a key no longer configured shows no code."""
    text = {k.decode(): v.decode() for k, v in fields.items()}
    status = text["st"]
    if status == "active" and int(text["vu"]) <= now:
        status = "expired"
    opened = sealer.reveal(SEALED_AS, [text["c"]])
    return Coupon(code=opened[0] if opened else None, template=text["t"], kind=text["k"],
                  amount=int(text["a"]), percent=int(text["pc"]), min_spend=int(text["ms"]),
                  max_discount=int(text["md"]), valid_from=rfc3339(int(text["vf"])),
                  valid_until=rfc3339(int(text["vu"])), status=status)


async def read(run: Run, shards: int, sealer: CodeOpener, storefront: str, buyer: str,
               found_id: str, now: int) -> Coupon:
    """One of the buyer's coupons, as it is now."""
    shard = shard_of_wallet(storefront, buyer, shards)
    [flat] = await run((scripts.COUPON_READ, [coupon(found_id, shard)], []))
    return view(dict(zip(flat[::2], flat[1::2], strict=True)), sealer, now)


async def of_buyer(redis: Redis, shards: int, sealer: Sealer, storefront: str, buyer: str,
                   now: int, status: str | None, limit: int) -> list[Coupon]:
    """The buyer's coupons, newest first (at most `limit` read), of one status or all."""
    shard = shard_of_wallet(storefront, buyer, shards)
    ids: Any = await redis.zrevrange(wallet(storefront, buyer, shard).coupons, 0, limit - 1)
    pipe = redis.pipeline(transaction=False)
    for found in ids:
        pipe.hgetall(coupon(found.decode(), shard))
    shown = [view(fields, sealer, now) for fields in await pipe.execute() if fields]
    return [c for c in shown if status is None or c.status == status]


async def revoke(redis: Redis, shards: int, code: str, now: int) -> str:
    """Revoke an unused coupon: its status before ("" when there is no such coupon)."""
    shard = shard_of_code(code, shards)
    if shard is None:
        return ""
    found: Any = await scripts.COUPON_REVOKE(
        redis, [coupon(coupon_id(code), shard), coupons_expiring(shard)],
        [coupon_id(code), now])
    return found.decode() if isinstance(found, bytes) else str(found)
