"""The OpenAPI 3.1 document of every route, built from the wire types.

Kept true by tests/test_openapi.py (routes, refs, problem codes) and tests/test_schema.py
(schemathesis, every check, against the running engine). What each route can answer:

- 401/403 on every /v1 and /admin route (the bearer key);
- 413/415/422 where a body is read (the decoders take JSON and msgpack, see `_body`), and 408
  where it is read with server.body_timeout_s (codec.read_body, the stock import);
- 503 `maintenance` or `unavailable` on every route but the always-open ones (/healthz,
  /readyz, /metrics, /status, /admin/maintenance: problems.ALWAYS_OPEN), and on the always-open
  ones that use Redis; 429 and 503 carry Retry-After;
- every /v1 answer carries RateLimit and RateLimit-Policy (but a 503 of maintenance or of the
  circuit breaker, which answers before the route does).
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import msgspec

from engine import __version__, errors
from engine.audit import MAX_PAGE
from engine.http.operations import MAX_MS, PauseRequest, ResumeRequest, ReviewDecision
from engine.http.pages import ASSETS, PageState
from engine.maintenance import MODES, MaintenanceState
from engine.pauses import OperatorPause
from engine.stock import ImportResult, SkuLevel
from engine.wire import STATUSES, BatchRequest, Order, OrderRequest

REF = "#/components/schemas/{name}"
PROBLEM_JSON = errors.PROBLEM_JSON
MSGPACK = "application/msgpack"

# What parse_rfc3339 takes: an RFC 3339 date-time with an upper-case T and a zone.
DATE_TIME = {"type": "string", "format": "date-time"}
EMPTY = {"type": "string", "const": ""}  # a query value the route takes as absent
# What the lot checks of engine.http.admin take.
LOT = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$(?!\n)"
EXISTING_LOT = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}(~[0-9]{1,12})?$(?!\n)"
CURSOR = r"^[0-9]{1,14}-[0-9]+-[0-9]+-[0-9]+-[0-9]+$(?!\n)"  # audit.parse_cursor
NOTIFY_URL = ("^https?://[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029"
              "\\u202f\\u205f\\u3000]+$(?!\\n)")
# a scope of pauses and maintenance: what can name a configured storefront or SKU
SCOPE = (r"^(global|storefront:[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
         r"|sku:[A-Za-z0-9][A-Za-z0-9._:-]{0,63})$(?!\n)")
# date.fromisoformat within the years the calendar answers (1900-2200).
DAY = r"^(19[0-9]{2}|2[01][0-9]{2}|2200)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$(?!\n)"

STATUS_TEXT = {
    401: "no valid bearer key (`unauthenticated`)",
    403: "the key may not use this route (`forbidden`), or the buyer is blocked (`blocked`)",
    404: "no such order, SKU or resource (`not_found`, `unknown_sku`)",
    409: "the resource is not in a state for this (`sold_out`, `limit_exceeded`, "
         "`idempotency_conflict`, `not_held`, `not_in_review`, `not_cancellable`)",
    408: "the body stalled longer than server.body_timeout_s (`request_timeout`)",
    413: "the body is over the limit (`payload_too_large`)",
    415: "the body's media type is not one the route reads (`unsupported_media_type`)",
    422: "the request is not valid (`invalid_request`; `errors` names each field)",
    429: "over a rate limit or the waiting line is full (`rate_limited`)",
    503: "closed for maintenance (`maintenance`), delivery paused (`paused`) or the store "
         "unreachable (`unavailable`)",
}


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "code", "detail"],
        "additionalProperties": False,
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "code": {"type": "string", "enum": sorted({p.code for p in errors.ALL})},
            "detail": {"type": "string"},
            "order_id": {"type": "string"},
            "notice": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        },
    }


def _header(schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


RETRY_AFTER = _header({"type": "string", "pattern": r"^[0-9]+$"}, "seconds to wait", True)
NOTICE = _header({"type": "string"}, "maintenance in force or announced (percent-encoded)")


def _rate_headers(required: bool) -> dict[str, Any]:
    return {
        "RateLimit-Policy": _header({"type": "string", "pattern": r'^"orders";q=[0-9]+;w=[0-9]+$'},
                                    "the tightest bucket's policy", required),
        "RateLimit": _header({"type": "string", "pattern": r'^"orders";r=[0-9]+;t=[0-9]+$'},
                             "what is left of it", required),
    }


def _headers(status: int, v1: bool) -> dict[str, Any]:
    """The headers of an answer (of a problem answer for 4xx and 5xx)."""
    headers = {"Kamigate-Notice": NOTICE}
    if v1:
        # maintenance and the open breaker answer before the route: no RateLimit then
        headers.update(_rate_headers(required=status != 503))
    if status in (429, 503):
        headers["Retry-After"] = RETRY_AFTER
    return headers


def _json(schema: str | dict[str, Any], msgpack: bool = False) -> dict[str, Any]:
    body = {"schema": {"$ref": REF.format(name=schema)} if isinstance(schema, str) else schema}
    content = {"application/json": body}
    if msgpack:
        content[MSGPACK] = body
    return content


def _body(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A body read by codec.decode_body: JSON (also as */*+json, text/plain and
    application/octet-stream) or msgpack."""
    return {"required": True, "content": _json(schema, msgpack=True)}


def _ok(status: int, schema: str | dict[str, Any], text: str = "ok") -> dict[str, Any]:
    """A 2xx answer: JSON, or msgpack for `Accept: application/msgpack`."""
    return {str(status): {"description": text, "content": _json(schema, msgpack=True)}}


def _op(summary: str, ok: dict[str, Any], *problems: int, body: dict[str, Any] | None = None,
        security: bool = True, params: list[dict[str, Any]] | None = None,
        v1: bool = False, description: str | None = None) -> dict[str, Any]:
    content = {PROBLEM_JSON: {"schema": {"$ref": REF.format(name="Problem")}}}
    responses = copy.deepcopy(ok)
    for response in responses.values():
        response.setdefault("headers", {}).update(_headers(200, v1))
    for s in problems:
        responses[str(s)] = {"description": STATUS_TEXT[s], "content": content,
                             "headers": _headers(s, v1)}
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if description:
        op["description"] = description
    if security:
        op["security"] = [{"bearer": []}]
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    return op


def _path(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


def _query(name: str, schema: dict[str, Any] | None = None, required: bool = False,
           description: str | None = None) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": required,
             "schema": schema or {"type": "string"}}
    if description:
        param["description"] = description
    return param


ORDER_ID = _path("order_id")
SKU = _path("sku")
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}}
TOKEN = _query("t", required=True, description="the signed token of the buyer's link")
LANG = _query("lang", description="`en` or `zh`; anything else: by Accept-Language")

CONFIG_VIEW = _ok(200, {
    "type": "object", "required": ["version", "sha256", "origin", "config"],
    "properties": {"version": {"type": "integer"}, "sha256": {"type": "string"},
                   "origin": {"type": "string"}, "by": {"type": ["string", "null"]},
                   "changed": {"type": "boolean"}, "config": {"type": "object"}}},
    "the running config")
CONFIG_BODY = {"required": True, "content": {
    "application/toml": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}}
STOCK_BODY = {"required": False, "content": {  # an empty body imports nothing
    "text/plain": {"schema": {"type": "string"}},
    "text/csv": {"schema": {"type": "string"}},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
}}


def _object(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def _array(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


STRING = {"type": "string"}
INT = {"type": "integer"}
OBJECT = {"type": "object"}
PAUSE_LISTING = _object(["active", "scheduled", "operators"], active=_array(OBJECT),
                        scheduled=_array(OBJECT),
                        operators=_array({"$ref": REF.format(name="OperatorPause")}))
CALENDAR = _object(["from", "to", "windows", "calendars"], **{
    "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
    "windows": _array(OBJECT),
    "calendars": {"type": "object", "additionalProperties": _array(_object(
        ["first_day", "last_day", "holiday"], first_day={"type": "string", "format": "date"},
        last_day={"type": "string", "format": "date"}, holiday=STRING))}})
REVIEW_LIST = _object(["orders"], orders=_array({"allOf": [
    {"$ref": REF.format(name="Order")},
    _object(["storefront"], storefront=STRING, buyer_ip={"type": ["string", "null"]})]}))
REVIEWED = _object(["order_id", "decision", "status"], order_id=STRING,
                   decision={"type": "string", "enum": ["approve", "reject"]}, status=STRING)
AUDIT = _object(["events", "next"], events=_array(OBJECT), next={"type": ["string", "null"]})
VOIDED = _object(["sku", "lot", "voided", "available"], sku=STRING, lot=STRING, voided=INT,
                 available=INT)
NOTICES = _object(["maintenance", "pauses"], maintenance={"type": ["object", "null"]},
                  pauses=_array(OBJECT))


def _components() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [OrderRequest, BatchRequest, Order, ImportResult, SkuLevel, PageState,
         MaintenanceState, PauseRequest, ResumeRequest, ReviewDecision, OperatorPause],
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
    components["Problem"] = _problem_schema()
    components["BatchResults"] = _object(["results"], results=_array({"oneOf": [
        {"$ref": REF.format(name="Order")}, {"$ref": REF.format(name="Problem")}]}))
    return components


def _paths() -> dict[str, Any]:
    order_answers = {
        **_ok(201, "Order", "fulfilled or held"),
        **_ok(202, "Order", "queued or pending"),
        **_ok(200, "Order", "replay of an earlier request (Idempotent-Replayed: true)"),
    }
    order_answers["200"]["headers"] = {"Idempotent-Replayed": _header(
        {"type": "string", "enum": ["true"]}, "this answers an earlier request", True)}
    stock_params = [SKU, _query("lot", {"anyOf": [{"type": "string", "pattern": LOT}, EMPTY]},
                                description="default (also for an empty value): L<UTC time>"),
                    _query("expires_at", {"anyOf": [DATE_TIME, EMPTY]},
                           description="when the lot's codes expire; empty: never")]
    return {
        "/v1/orders": {"post": _op(
            "Create an order", order_answers, 401, 403, 404, 408, 409, 413, 415, 422, 429, 503,
            body=_body("OrderRequest"), params=[IDEMPOTENCY], v1=True,
            description="422 also for what the config limits: qty over the SKU's max_qty, "
                        "hold_s over orders.max_hold_s, metadata over 2 KiB encoded.")},
        "/v1/orders/batch": {"post": _op(
            "Create up to 1000 orders", _ok(200, "BatchResults"),
            401, 403, 408, 413, 415, 422, 503, body=_body("BatchRequest"), v1=True,
            description="Each order is answered in `results`, in order: an Order, or the "
                        "problem it met (404, 409, 422, 429, 503 of that order alone).")},
        "/v1/orders/{order_id}": {
            "get": _op("Read an order", _ok(200, "Order"), 401, 403, 404, 503,
                       params=[ORDER_ID], v1=True),
            "delete": _op("Cancel an order", _ok(200, "Order"), 401, 403, 404, 409, 503,
                          params=[ORDER_ID], v1=True),
        },
        "/v1/orders/{order_id}/confirm": {
            "post": _op("Confirm a held order", _ok(200, "Order"), 401, 403, 404, 409, 503,
                        params=[ORDER_ID], v1=True),
        },
        "/admin/skus": {"get": _op(
            "Stock levels of every SKU",
            _ok(200, _object(["skus"], skus=_array({"$ref": REF.format(name="SkuLevel")}))),
            401, 403, 503)},
        "/admin/skus/{sku}": {"get": _op("Stock level of one SKU", _ok(200, "SkuLevel"),
                                         401, 403, 404, 503, params=[SKU])},
        "/admin/skus/{sku}/stock": {
            "post": _op("Import codes (one a line; CSV: code,expires_at)",
                        _ok(200, "ImportResult"), 401, 403, 404, 408, 409, 413, 415, 422, 503,
                        params=stock_params, body=STOCK_BODY),
            "delete": _op("Void the unsold codes of a lot", _ok(200, VOIDED),
                          401, 403, 404, 422, 503,
                          params=[SKU, _query("lot", {"type": "string",
                                                      "pattern": EXISTING_LOT},
                                              required=True)]),
        },
        "/q/{order_id}": {"get": _op(
            "Buyer's waiting page (HTML, signed link)",
            {"200": {"description": "the page", "content": {"text/html": {}}},
             "404": {"description": "link not valid (HTML page)"}}, 503,
            security=False, params=[ORDER_ID, TOKEN, LANG])},
        "/q/{order_id}/state": {"get": _op("State the waiting page polls (never codes)",
                                           {"200": {"description": "ok", "content": _json(
                                               "PageState")}}, 404, 503,
                                           security=False, params=[ORDER_ID, TOKEN, LANG])},
        "/status": {"get": _op(
            "Maintenance and pause notices (HTML; JSON for Accept: application/json)",
            {"200": {"description": "notices", "content": {"text/html": {}, "application/json":
                                                           {"schema": NOTICES}}}},
            security=False, params=[LANG])},
        "/assets/{name}": {"get": _op(
            "Stylesheet and script of the buyer pages",
            {"200": {"description": "the asset", "content": {
                media: {"schema": STRING} for media in sorted(set(ASSETS.values()))}}},
            404, 503, security=False,
            params=[_path("name", enum=sorted(ASSETS))])},
        "/admin/maintenance": {"put": _op(
            "Set maintenance for every front door (off, read_only, full; starts_at schedules)",
            _ok(200, "MaintenanceState"), 401, 403, 408, 413, 415, 422, 503,
            body=_body("MaintenanceState"),
            description="422 also for a scope naming no configured storefront or SKU.")},
        "/admin/config": {
            "get": _op("The running config (secrets redacted), its version and sha256",
                       CONFIG_VIEW, 401, 403, 503),
            "put": _op("Replace the fleet's config; validated whole, applied everywhere within "
                       "1 s; refused (422, every error by key) leaves the running one",
                       CONFIG_VIEW, 401, 403, 413, 415, 422, 503, body=CONFIG_BODY),
        },
        "/admin/config/reload": {"post": _op(
            "Re-read the config file (same validation as PUT)", CONFIG_VIEW, 401, 403, 404,
            422, 503)},
        "/admin/pause": {"post": _op(
            "Pause automatic delivery for a scope (global, storefront:<id>, sku:<id>)",
            _ok(200, "OperatorPause"), 401, 403, 408, 413, 415, 422, 503,
            body=_body("PauseRequest"),
            description="422 also for a scope naming no configured storefront or SKU, and for "
                        "`until` in the past or more than 3660 days ahead.")},
        "/admin/resume": {"post": _op(
            "End a pause of a scope (overrides a calendar window until its end)",
            _ok(200, "OperatorPause"), 401, 403, 404, 408, 413, 415, 422, 503,
            body=_body("ResumeRequest"),
            description="422 also for a scope naming no configured storefront or SKU.")},
        "/admin/pauses": {"get": _op("Pauses in force, scheduled, and operators' pauses",
                                     _ok(200, PAUSE_LISTING), 401, 403, 503)},
        "/admin/calendar": {"get": _op(
            "Pause windows from the calendars and ranges, and each calendar's holidays",
            _ok(200, CALENDAR), 401, 403, 422, 503,
            params=[_query("from", {"type": "string", "format": "date", "pattern": DAY},
                           description="default: today (UTC)"),
                    _query("to", {"type": "string", "format": "date", "pattern": DAY},
                           description="default: from + 366 days")],
            description="422 also when `to` is not after `from` or more than 3660 days on.")},
        "/admin/review": {"get": _op("Orders waiting for review", _ok(200, REVIEW_LIST),
                                     401, 403, 503)},
        "/admin/review/{order_id}": {"post": _op(
            "Approve (claim it now) or reject an order waiting for review", _ok(200, REVIEWED),
            401, 403, 404, 408, 409, 413, 415, 422, 503, body=_body("ReviewDecision"),
            params=[ORDER_ID])},
        "/admin/audit": {"get": _op(
            "Admin actions, config changes and code issuance since a moment (oldest first)",
            _ok(200, AUDIT), 401, 403, 422, 503,
            params=[_query("since", {"anyOf": [
                        {"type": "string", "pattern": r"^[0-9]{1,14}$(?!\n)"},
                        {**DATE_TIME, "pattern": r"^(19[7-9][0-9]|[2-9][0-9]{3})-"}, EMPTY]},
                        description="RFC 3339 (from 1970) or unix ms; default (also for an "
                                    "empty value): an hour ago"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE}),
                    _query("after", {"anyOf": [{"type": "string", "pattern": CURSOR}, EMPTY]},
                           description="`next` of the page before")],
            description=f"422 also for `since` or `after` past {MAX_MS} (unix ms).")},
        "/healthz": {"get": _op("Process alive", _ok(200, _object(["status"], status=STRING)),
                                security=False)},
        "/readyz": {"get": _op("Ready to take orders", {
            "200": {"description": "ready", "content": _json(OBJECT)},
            "503": {"description": "not ready (the same JSON, status not_ready)"}},
            security=False)},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {
            "description": "text exposition format", "content": {
                "text/plain": {"schema": STRING}}}}, security=False)},
        "/openapi.json": {"get": _op("This document", {"200": {
            "description": "OpenAPI 3.1", "content": _json(OBJECT)}}, 503, security=False)},
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
