"""The OpenAPI 3.1 document of every route, built from the wire types.

Kept true by tests/test_openapi.py (routes, refs, problem codes) and tests/test_schema.py
(schemathesis, every check, against the running engine). What each route can answer:

- 401/403 on every /v1 and /admin route (the bearer key);
- 413/415/422 where a body is read (the decoders take JSON and msgpack, see `request_body`), and 408
  where it is read with server.body_timeout_s (codec.read_body, the stock import);
- 503 `maintenance` or `unavailable` on every route but the always-open ones (/healthz,
  /readyz, /metrics, /status, /admin/maintenance: problems.ALWAYS_OPEN; in maintenance also
  the buyer pages, problems.BUYER_PAGES), and on the always-open ones that use Redis; 429 and
  503 carry Retry-After;
- every /v1 answer carries RateLimit and RateLimit-Policy (but a 503 of maintenance or of the
  circuit breaker, which answers before the route does).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from engine import __version__
from engine.controls.maintenance import MODES, MaintenanceState
from engine.controls.pauses import OperatorPause
from engine.http.openapi_vocabulary import (
    AUDIT,
    BUYER,
    CALENDAR,
    CONFIG_BODY,
    CONFIG_VIEW,
    CURSOR,
    DATE_TIME,
    DAY,
    EMPTY,
    IDEMPOTENCY,
    LANG,
    NOTICES,
    NOTIFY_URL,
    OBJECT,
    ORDER_ID,
    PAUSE_LISTING,
    REF,
    REVIEW_LIST,
    REVIEWED,
    SCOPE,
    SKU,
    STOCK_BODY,
    STRING,
    TOKEN,
    VOIDED,
    array_of,
    header,
    json_content,
    object_of,
    ok,
    op,
    path_param,
    problem_schema,
    query_param,
    request_body,
)
from engine.http.operations import MAX_MS
from engine.http.pages import ASSETS
from engine.stock.importer import ImportResult
from engine.stock.lots import SkuLevel
from engine.store.audit import MAX_PAGE
from engine.wire import (
    EXISTING_LOT_PATTERN,
    LOT_PATTERN,
    STATUSES,
    BatchRequest,
    Order,
    OrderRequest,
    PageState,
    PauseRequest,
    ResumeRequest,
    ReviewDecision,
)
from engine.wire_wallet import (
    Campaign,
    CampaignRequest,
    Compensated,
    CompensationRequest,
    CouponList,
    CouponRequest,
    LedgerPage,
    PointsMoved,
    PointsRequest,
    Wallet,
)


def _components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [OrderRequest, BatchRequest, Order, ImportResult, SkuLevel, PageState,
         MaintenanceState, PauseRequest, ResumeRequest, ReviewDecision, OperatorPause,
         PointsRequest, Wallet, PointsMoved, LedgerPage, CompensationRequest, Compensated,
         CouponRequest, CouponList, CampaignRequest, Campaign],
        ref_template=REF,
    )
    components["Order"]["properties"]["status"]["enum"] = list(STATUSES)
    for name in ("OrderRequest", "BatchItem"):
        # wire.NotifyUrl's `\\s` is Python's (str.isspace), which ECMA's `\\s` is not
        components[name]["properties"]["notify_url"]["anyOf"][0]["pattern"] = NOTIFY_URL
    # orders._check: an IPv4 or IPv6 address, else 422 (in a batch: that item's result)
    components["OrderRequest"]["properties"]["buyer_ip"]["anyOf"][0].update(
        {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]})
    maintenance = components["MaintenanceState"]["properties"]
    maintenance["mode"]["enum"] = list(MODES)
    maintenance["scope"]["pattern"] = SCOPE
    for name in ("eta", "starts_at"):
        maintenance[name]["anyOf"][0].update(DATE_TIME)
    for name in ("PauseRequest", "ResumeRequest"):
        components[name]["properties"]["scope"]["pattern"] = SCOPE
    components["PauseRequest"]["properties"]["until"]["anyOf"][0].update(DATE_TIME)
    components["Problem"] = problem_schema()
    components["BatchResults"] = object_of(["results"], results=array_of({"oneOf": [
        {"$ref": REF.format(name="Order")}, {"$ref": REF.format(name="Problem")}]}))
    return components


def _paths() -> dict[str, Any]:
    order_answers = {
        **ok(201, "Order", "fulfilled or held"),
        **ok(202, "Order", "queued or pending"),
        **ok(200, "Order", "replay of an earlier request (Idempotent-Replayed: true)"),
    }
    order_answers["200"]["headers"] = {"Idempotent-Replayed": header(
        {"type": "string", "enum": ["true"]}, "this answers an earlier request", True)}
    lot = {"anyOf": [{"type": "string", "pattern": LOT_PATTERN}, EMPTY]}
    stock_params = [SKU, query_param("lot", lot, description="default (also for an empty "
                                     "value): L<UTC time>"),
                    query_param("expires_at", {"anyOf": [DATE_TIME, EMPTY]},
                                description="when the lot's codes expire; empty: never")]
    return {
        "/v1/orders": {"post": op(
            "Create an order", order_answers, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503,
            body=request_body("OrderRequest"), params=[IDEMPOTENCY], v1=True,
            description="422 also for what the config limits: qty over the SKU's max_qty, "
                        "hold_s over orders.max_hold_s, metadata over 2 KiB encoded.")},
        "/v1/orders/batch": {"post": op(
            "Create up to 1000 orders", ok(200, "BatchResults"),
            401, 403, 408, 413, 415, 422, 503, body=request_body("BatchRequest"), v1=True,
            description="Each order is answered in `results`, in order: an Order, or the "
                        "problem it met (404, 409, 422, 429, 503 of that order alone).")},
        "/v1/orders/{order_id}": {
            "get": op("Read an order", ok(200, "Order"), 401, 403, 404, 503,
                       params=[ORDER_ID], v1=True),
            "delete": op("Cancel an order", ok(200, "Order"), 401, 403, 404, 409, 503,
                          params=[ORDER_ID], v1=True),
        },
        "/v1/orders/{order_id}/confirm": {
            "post": op("Confirm a held order", ok(200, "Order"), 401, 403, 404, 409, 503,
                        params=[ORDER_ID], v1=True),
        },
        "/v1/buyers/{buyer}/points": {
            "get": op("A buyer's points at this storefront", ok(200, "Wallet"),
                      401, 403, 404, 422, 503, params=[BUYER], v1=True,
                      description="404 when [points] is not enabled."),
            "post": op("Grant (points > 0) or deduct (points < 0) points",
                       {**ok(201, "PointsMoved")}, 401, 403, 404, 408, 409, 413, 415, 422,
                       429, 503, body=request_body("PointsRequest"),
                       params=[BUYER, IDEMPOTENCY], v1=True,
                       description="409 insufficient_points: a deduction below zero; "
                                   "idempotency_conflict: the key with another body."),
        },
        "/v1/buyers/{buyer}/points/history": {"get": op(
            "The buyer's points ledger, newest first", ok(200, "LedgerPage"),
            401, 403, 404, 422, 503, v1=True,
            params=[BUYER, query_param("cursor", {"anyOf": [
                {"type": "string", "pattern": r"^[0-9]{1,20}-[0-9]{1,20}$"}, EMPTY]},
                description="`next_cursor` of the page before"),
                query_param("limit", {"type": "integer", "minimum": 1, "maximum": 200})])},
        "/v1/buyers/{buyer}/coupons": {
            "get": op("A buyer's coupons at this storefront, newest first (200 at most)",
                      ok(200, "CouponList"), 401, 403, 422, 503, v1=True,
                      params=[BUYER, query_param("status", {"anyOf": [
                          {"enum": ["active", "reserved", "redeemed", "expired", "revoked"]},
                          EMPTY]})]),
            "post": op("Issue a coupon of a template to the buyer",
                       ok(201, "Coupon"), 401, 403, 408, 409, 413, 415, 422, 503,
                       body=request_body("CouponRequest"), params=[BUYER, IDEMPOTENCY],
                       v1=True, description="409 coupon_limit: the template's per_buyer or "
                                            "total is reached; idempotency_conflict. 422 "
                                            "for a template not configured or ended."),
        },
        "/admin/coupons/issue": {"post": op(
            "Issue a template's coupon to many buyers, once per campaign",
            ok(200, "Campaign"), 401, 403, 408, 413, 415, 422, 503,
            body=request_body("CampaignRequest"),
            description="422 also for an unknown storefront or template.")},
        "/admin/coupons/{code}": {"delete": op(
            "Revoke an unused coupon", {"204": {"description": "revoked"}},
            401, 403, 404, 409, 503,
            params=[path_param("code", pattern=r"^CP[0-9A-F]{4}[A-Z2-7]{24}$")],
            description="409 coupon_not_active: reserved, redeemed or expired.")},
        "/admin/skus": {"get": op(
            "Stock levels of every SKU",
            ok(200, object_of(["skus"], skus=array_of({"$ref": REF.format(name="SkuLevel")}))),
            401, 403, 503)},
        "/admin/skus/{sku}": {"get": op("Stock level of one SKU", ok(200, "SkuLevel"),
                                         401, 403, 404, 503, params=[SKU])},
        "/admin/skus/{sku}/stock": {
            "post": op("Import codes (one a line; CSV: code,expires_at)",
                        ok(200, "ImportResult"), 401, 403, 404, 408, 409, 413, 415, 422, 503,
                        params=stock_params, body=STOCK_BODY),
            "delete": op("Void the unsold codes of a lot", ok(200, VOIDED),
                          401, 403, 404, 422, 503,
                          params=[SKU, query_param("lot", {"type": "string",
                                                      "pattern": EXISTING_LOT_PATTERN},
                                              required=True)]),
        },
        "/q/{order_id}": {"get": op(
            "Buyer's waiting page (HTML, signed link)",
            {"200": {"description": "the page", "content": {"text/html": {}}},
             "404": {"description": "link not valid (HTML page)"}}, 503,
            security=False, params=[ORDER_ID, TOKEN, LANG])},
        "/q/{order_id}/state": {"get": op("State the waiting page polls (never codes)",
                                           {"200": {"description": "ok", "content": json_content(
                                               "PageState")}}, 404, 503,
                                           security=False, params=[ORDER_ID, TOKEN, LANG])},
        "/status": {"get": op(
            "Maintenance and pause notices (HTML; JSON for Accept: application/json)",
            {"200": {"description": "notices", "content": {"text/html": {}, "application/json":
                                                           {"schema": NOTICES}}}},
            security=False, params=[LANG])},
        "/assets/{name}": {"get": op(
            "Stylesheet and script of the buyer pages",
            {"200": {"description": "the asset", "content": {
                media: {"schema": STRING} for media in sorted(set(ASSETS.values()))}}},
            404, 503, security=False,
            params=[path_param("name", enum=sorted(ASSETS))])},
        "/admin/maintenance": {"put": op(
            "Set maintenance for every front door (off, read_only, full; starts_at schedules)",
            ok(200, "MaintenanceState"), 401, 403, 408, 413, 415, 422, 503,
            body=request_body("MaintenanceState"),
            description="422 also for a scope naming no configured storefront or SKU.")},
        "/admin/config": {
            "get": op("The running config (secrets redacted), its version and sha256",
                       CONFIG_VIEW, 401, 403, 503),
            "put": op("Replace the fleet's config; validated whole, applied everywhere within "
                       "1 s; refused (422, every error by key) leaves the running one",
                       CONFIG_VIEW, 401, 403, 413, 415, 422, 503, body=CONFIG_BODY),
        },
        "/admin/config/reload": {"post": op(
            "Re-read the config file (same validation as PUT)", CONFIG_VIEW, 401, 403, 404,
            422, 503)},
        "/admin/pause": {"post": op(
            "Pause automatic delivery for a scope (global, storefront:<id>, sku:<id>)",
            ok(200, "OperatorPause"), 401, 403, 408, 413, 415, 422, 503,
            body=request_body("PauseRequest"),
            description="422 also for a scope naming no configured storefront or SKU, and for "
                        "`until` in the past or more than 3660 days ahead.")},
        "/admin/resume": {"post": op(
            "End a pause of a scope (overrides a calendar window until its end)",
            ok(200, "OperatorPause"), 401, 403, 404, 408, 413, 415, 422, 503,
            body=request_body("ResumeRequest"),
            description="422 also for a scope naming no configured storefront or SKU.")},
        "/admin/pauses": {"get": op("Pauses in force, scheduled, and operators' pauses",
                                     ok(200, PAUSE_LISTING), 401, 403, 503)},
        "/admin/calendar": {"get": op(
            "Pause windows from the calendars and ranges, and each calendar's holidays",
            ok(200, CALENDAR), 401, 403, 422, 503,
            params=[query_param("from", {"type": "string", "format": "date", "pattern": DAY},
                           description="default: today (UTC)"),
                    query_param("to", {"type": "string", "format": "date", "pattern": DAY},
                           description="default: from + 366 days")],
            description="422 also when `to` is not after `from` or more than 3660 days on.")},
        "/admin/review": {"get": op("Orders waiting for review", ok(200, REVIEW_LIST),
                                     401, 403, 503)},
        "/admin/review/{order_id}": {"post": op(
            "Approve (claim it now) or reject an order waiting for review", ok(200, REVIEWED),
            401, 403, 404, 408, 409, 413, 415, 422, 503, body=request_body("ReviewDecision"),
            params=[ORDER_ID])},
        "/admin/compensations": {"post": op(
            "Compensate the buyers of a storefront's orders made in a window",
            ok(200, "Compensated"), 401, 403, 408, 413, 415, 422, 503,
            body=request_body("CompensationRequest"),
            description="Once per order per `reason`: asked again, the orders compensated "
                        "before count as `already`. 422 also for an unknown storefront or "
                        "SKU, `to` not after `from`, a window over 366 days, points off.")},
        "/admin/audit": {"get": op(
            "Admin actions, config changes and code issuance since a moment (oldest first)",
            ok(200, AUDIT), 401, 403, 422, 503,
            params=[query_param("since", {"anyOf": [
                        {"type": "string", "pattern": r"^[0-9]{1,14}$(?!\n)"},
                        {**DATE_TIME, "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-"}, EMPTY]},
                        description="RFC 3339 (from 1970) or unix ms; default (also for an "
                                    "empty value): an hour ago"),
                    query_param("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                    query_param("after", {"anyOf": [{"type": "string", "pattern": CURSOR}, EMPTY]},
                           description="`next` of the page before")],
            description=f"422 also for `since` or `after` past {MAX_MS} (unix ms).")},
        "/healthz": {"get": op("Process alive", ok(200, object_of(["status"], status=STRING)),
                                security=False)},
        "/readyz": {"get": op("Ready to take orders", {
            "200": {"description": "ready", "content": json_content(OBJECT)},
            "503": {"description": "not ready (the same JSON, status not_ready)"}},
            security=False)},
        "/metrics": {"get": op("Prometheus metrics", {"200": {
            "description": "text exposition format", "content": {
                "text/plain": {"schema": STRING}}}}, 401, security=False,
            description="401 when `[server] metrics_token` is set and not given as a bearer "
                        "token.")},
        "/openapi.json": {"get": op("This document", {"200": {
            "description": "OpenAPI 3.1", "content": json_content(OBJECT)}}, 503, security=False)},
    }


def build() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "kamigate", "version": __version__,
                 "description": "Order ingestion for shops that sell secret codes."},
        "paths": _paths(),
        "components": {"schemas": _components(),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@functools.cache
def document_bytes() -> bytes:
    return msgspec.json.encode(build())
