"""The vocabulary of the OpenAPI document (engine/http/openapi.py): patterns, headers, problem
responses, and the helpers that build an operation from them."""

from __future__ import annotations

import copy
from typing import Any

from engine import errors

REF = "#/components/schemas/{name}"
PROBLEM_JSON = errors.PROBLEM_JSON
MSGPACK = "application/msgpack"

# What parse_rfc3339 takes: an RFC 3339 date-time with an upper-case T and a zone.
DATE_TIME = {"type": "string", "format": "date-time"}
EMPTY = {"type": "string", "const": ""}  # a query value the route takes as absent
# What the lot checks of engine.http.admin take.
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
         "`idempotency_conflict`, `not_held`, `not_in_review`, `not_cancellable`, "
         "`insufficient_points`, `order_abandoned`, `recalled`, `coupon_limit`, "
         "`coupon_not_active`, `coupon_invalid`: one `errors` entry per coupon)",
    408: "the body stalled longer than server.body_timeout_s (`request_timeout`)",
    413: "the body is over the limit (`payload_too_large`)",
    415: "the body's media type is not one the route reads (`unsupported_media_type`)",
    422: "the request is not valid (`invalid_request`; `errors` names each field), or "
         "points on a SKU without a price (`not_priced`)",
    429: "over a rate limit or the waiting line is full (`rate_limited`)",
    503: "closed for maintenance (`maintenance`), delivery paused (`paused`) or the store "
         "unreachable (`unavailable`)",
}


def problem_schema() -> dict[str, Any]:
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


def header(schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


RETRY_AFTER = header({"type": "string", "pattern": r"^[0-9]+$"}, "seconds to wait", True)
NOTICE = header({"type": "string"}, "maintenance in force or announced (percent-encoded)")


def _rate_headers(required: bool) -> dict[str, Any]:
    return {
        "RateLimit-Policy": header({"type": "string", "pattern": r'^"orders";q=[0-9]+;w=[0-9]+$'},
                                    "the tightest bucket's policy", required),
        "RateLimit": header({"type": "string", "pattern": r'^"orders";r=[0-9]+;t=[0-9]+$'},
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


def json_content(schema: str | dict[str, Any], msgpack: bool = False) -> dict[str, Any]:
    body = {"schema": {"$ref": REF.format(name=schema)} if isinstance(schema, str) else schema}
    content = {"application/json": body}
    if msgpack:
        content[MSGPACK] = body
    return content


def request_body(schema: str | dict[str, Any]) -> dict[str, Any]:
    """A body read by codec.decode_body: JSON (also as */*+json, text/plain and
    application/octet-stream) or msgpack."""
    return {"required": True, "content": json_content(schema, msgpack=True)}


def ok(status: int, schema: str | dict[str, Any], text: str = "ok") -> dict[str, Any]:
    """A 2xx answer: JSON, or msgpack for `Accept: application/msgpack`."""
    return {str(status): {"description": text, "content": json_content(schema, msgpack=True)}}


def op(summary: str, answers: dict[str, Any], *problems: int, body: dict[str, Any] | None = None,
       security: bool = True, params: list[dict[str, Any]] | None = None,
       v1: bool = False, description: str | None = None) -> dict[str, Any]:
    content = {PROBLEM_JSON: {"schema": {"$ref": REF.format(name="Problem")}}}
    responses = copy.deepcopy(answers)
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


def path_param(name: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", **schema}}


def query_param(name: str, schema: dict[str, Any] | None = None, required: bool = False,
           description: str | None = None) -> dict[str, Any]:
    param = {"name": name, "in": "query", "required": required,
             "schema": schema or {"type": "string"}}
    if description:
        param["description"] = description
    return param


ORDER_ID = path_param("order_id")
SKU = path_param("sku")
BUYER = path_param("buyer", minLength=1, maxLength=128, pattern=r"^[!-~]{1,128}$")
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}}
TOKEN = query_param("t", required=True, description="the signed token of the buyer's link")
LANG = query_param("lang", description="`en` or `zh`; anything else: by Accept-Language")

CONFIG_VIEW = ok(200, {
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


def object_of(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


def array_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": schema}


STRING = {"type": "string"}
INT = {"type": "integer"}
OBJECT = {"type": "object"}
PAUSE_LISTING = object_of(["active", "scheduled", "operators"], active=array_of(OBJECT),
                        scheduled=array_of(OBJECT),
                        operators=array_of({"$ref": REF.format(name="OperatorPause")}))
CALENDAR = object_of(["from", "to", "windows", "calendars"], **{
    "from": {"type": "string", "format": "date"}, "to": {"type": "string", "format": "date"},
    "windows": array_of(OBJECT),
    "calendars": {"type": "object", "additionalProperties": array_of(object_of(
        ["first_day", "last_day", "holiday"], first_day={"type": "string", "format": "date"},
        last_day={"type": "string", "format": "date"}, holiday=STRING))}})
REVIEW_LIST = object_of(["orders"], orders=array_of({"allOf": [
    {"$ref": REF.format(name="Order")},
    object_of(["storefront"], storefront=STRING, buyer_ip={"type": ["string", "null"]})]}))
REVIEWED = object_of(["order_id", "decision", "status"], order_id=STRING,
                   decision={"type": "string", "enum": ["approve", "reject"]}, status=STRING)
AUDIT = object_of(["events", "next"], events=array_of(OBJECT), next={"type": ["string", "null"]})
VOIDED = object_of(["sku", "lot", "voided", "available"], sku=STRING, lot=STRING, voided=INT,
                 available=INT)
NOTICES = object_of(["maintenance", "pauses"], maintenance={"type": ["object", "null"]},
                  pauses=array_of(OBJECT))
