"""Coupons over HTTP: a storefront issues one to a buyer and lists a buyer's (storefront
key); an operator issues a campaign and revokes an unused coupon (admin key)."""

from __future__ import annotations

import hashlib

from aiohttp import web

from engine import errors
from engine.clock import now_ms
from engine.config.settings import CouponTemplate, Settings
from engine.http.auth import admin_of, storefront_of
from engine.http.codec import decode_body, respond
from engine.http.fields import buyer_of, idempotency_key, known_storefront
from engine.http.payment import pipelined
from engine.http.state import DIRECTORY, REDIS
from engine.store import audit
from engine.wallet import coupons, ledger
from engine.wire import msgpack_encode
from engine.wire_wallet import (
    CAMPAIGN_REQUEST,
    COUPON_REQUEST,
    Campaign,
    CouponList,
)

STATUSES = ("active", "reserved", "redeemed", "expired", "revoked")
MAX_LISTED = 200


def _template(settings: Settings, name: str) -> CouponTemplate:
    found = next((t for t in settings.coupon_templates if t.id == name), None)
    if found is None:
        raise errors.invalid("template", f"{name!r} is not a configured coupon template")
    return found


async def issue_one(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    buyer = buyer_of(request)
    body = await decode_body(request, COUPON_REQUEST)
    template = _template(directory.settings, body.template)
    key = idempotency_key(request)
    run, now = pipelined(request.app), now_ms()
    outcome, coupon_id, issued = await coupons.issue(
        run, directory.settings, directory.sealer, storefront.id, buyer, template, now, key,
        hashlib.sha256(msgpack_encode(body)).hexdigest())
    if outcome == "conflict":
        raise errors.IdempotencyConflict("this Idempotency-Key was used with a different body")
    if outcome == "limit":
        raise errors.CouponLimit(f"template {template.id!r}: its per_buyer ({template.per_buyer})"
                                 f" or total ({template.total}) limit is reached")
    if outcome == "ended":
        raise errors.invalid("template", f"{template.id!r} is no longer valid (valid_until)")
    if issued is None:  # a replay: the coupon its key issued first
        issued = await coupons.read(run, directory.settings.redis.shards, directory.sealer,
                                    storefront.id, buyer, coupon_id, now)
    headers = {"Idempotent-Replayed": "true"} if outcome == "replay" else None
    return respond(request, issued, status=201, headers=headers)


async def list_coupons(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    storefront = await storefront_of(request, directory)
    buyer = buyer_of(request)
    status = request.query.get("status") or None
    if status is not None and status not in STATUSES:
        raise errors.invalid("status", f"one of {', '.join(STATUSES)}")
    found = await coupons.of_buyer(request.app[REDIS], directory.settings.redis.shards,
                                   directory.sealer, storefront.id, buyer, now_ms(), status,
                                   MAX_LISTED)
    return respond(request, CouponList(coupons=found))


async def issue_campaign(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    body = await decode_body(request, CAMPAIGN_REQUEST)
    settings = directory.settings
    known_storefront(settings, body.storefront)
    template = _template(settings, body.template)
    redis, now = request.app[REDIS], now_ms()
    tally = Campaign(issued=0, already=0, limited=0, invalid=0)
    key = f"campaign:{body.campaign}:{template.id}"
    run = pipelined(request.app)
    for buyer in dict.fromkeys(body.buyers):  # a buyer named twice gets one coupon
        if not ledger.valid_buyer(buyer):
            tally.invalid += 1
            continue
        outcome, _, _ = await coupons.issue(run, settings, directory.sealer,
                                            body.storefront, buyer, template, now, key, key)
        if outcome == "ended":
            raise errors.invalid("template", f"{template.id!r} is no longer valid")
        tally.issued += outcome == "ok"
        tally.already += outcome in ("replay", "conflict")
        tally.limited += outcome == "limit"
    await audit.record(redis, who.id, "coupons.issue", {
        "storefront": body.storefront, "template": template.id, "campaign": body.campaign,
        "buyers": len(body.buyers), "issued": tally.issued, "already": tally.already,
        "limited": tally.limited, "invalid": tally.invalid})
    return respond(request, tally)


async def revoke(request: web.Request) -> web.Response:
    directory = request.app[DIRECTORY].current
    who = admin_of(request, directory, "operator")
    code = request.match_info["code"]
    redis = request.app[REDIS]
    before = await coupons.revoke(redis, directory.settings.redis.shards, code, now_ms())
    if not before:
        raise errors.NotFound("no such coupon")
    if before not in ("active", "revoked"):
        raise errors.CouponNotActive(f"the coupon is {before}: only an unused coupon may be "
                                     "revoked")
    await audit.record(redis, who.id, "coupons.revoke",
                       {"coupon": coupons.coupon_id(code)})  # the digest: never the code
    return web.Response(status=204)


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/buyers/{buyer}/coupons", issue_one),
        web.get("/v1/buyers/{buyer}/coupons", list_coupons),
        web.post("/admin/coupons/issue", issue_campaign),
        # a coupon code's shape: "/admin/coupons/issue" is not one
        web.delete("/admin/coupons/{code:CP[0-9A-F]{4}[A-Z2-7]{24}}", revoke),
    ]
