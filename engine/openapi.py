"""The OpenAPI 3.1 document of every route, built from the wire types."""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from engine import __version__, errors
from engine.http.pages import PageState
from engine.maintenance import MaintenanceState
from engine.stock import ImportResult, SkuLevel
from engine.wire import BatchRequest, Order, OrderRequest

REF = "#/components/schemas/{name}"


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["type", "title", "status", "code", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "code": {"type": "string", "enum": sorted({p.code for p in errors.ALL})},
            "detail": {"type": "string"},
            "order_id": {"type": "string"},
            "notice": {"type": "string"},
            "errors": {"type": "array", "items": {
                "type": "object", "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}}}},
        },
    }


def _json(schema: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(name=schema)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    content = {"application/problem+json": {"schema": {"$ref": REF.format(name="Problem")}}}
    return {str(s): {"description": "problem", "content": content} for s in statuses}


def _op(summary: str, ok: dict[str, Any], *problems: int, body: str | None = None,
        security: str = "storefront", params: list[dict[str, Any]] | None = None,
        body_content: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**ok, **_problems(*problems)}}
    if security:
        op["security"] = [{"bearer": []}]
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json(body)}
    if body_content is not None:
        op["requestBody"] = {"required": True, "content": body_content}
    if params:
        op["parameters"] = params
    return op


def _ok(status: int, schema: str, text: str = "ok") -> dict[str, Any]:
    return {str(status): {"description": text, "content": _json(schema)}}


ORDER_ID = {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
SKU = {"name": "sku", "in": "path", "required": True, "schema": {"type": "string"}}
IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
               "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"}}


TOKEN = {"name": "t", "in": "query", "required": True, "schema": {"type": "string"}}
LANG = {"name": "lang", "in": "query", "required": False,
        "schema": {"type": "string", "enum": ["en", "zh"]}}


CONFIG_VIEW = {"200": {"description": "the running config", "content": {
    "application/json": {"schema": {
        "type": "object", "required": ["version", "sha256", "origin", "config"],
        "properties": {"version": {"type": "integer"}, "sha256": {"type": "string"},
                       "origin": {"type": "string"}, "by": {"type": ["string", "null"]},
                       "changed": {"type": "boolean"}, "config": {"type": "object"}}}}}}}


OBJECT = {"200": {"description": "ok", "content": {
    "application/json": {"schema": {"type": "object"}}}}}


def _object(*required: str, **optional: str) -> dict[str, Any]:
    props: dict[str, Any] = {name: {"type": "string"} for name in required}
    props.update({name: {"type": [kind, "null"]} for name, kind in optional.items()})
    return {"application/json": {"schema": {"type": "object", "required": list(required),
                                            "properties": props}}}


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}


def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components(
        [OrderRequest, BatchRequest, Order, ImportResult, SkuLevel, PageState,
         MaintenanceState],
        ref_template=REF
    )
    components["Problem"] = _problem_schema()
    components["BatchResults"] = {"type": "object", "required": ["results"], "properties": {
        "results": {"type": "array", "items": {"oneOf": [
            {"$ref": REF.format(name="Order")}, {"$ref": REF.format(name="Problem")}]}}}}
    order_answers = {
        **_ok(201, "Order", "fulfilled or held"),
        **_ok(202, "Order", "queued or pending"),
        **_ok(200, "Order", "replay of an earlier request (Idempotent-Replayed: true)"),
    }
    paths = {
        "/v1/orders": {"post": _op("Create an order", order_answers, 401, 403, 404, 409, 413,
                                   415, 422, 429, 503, body="OrderRequest",
                                   params=[IDEMPOTENCY])},
        "/v1/orders/batch": {"post": _op("Create up to 1000 orders", _ok(200, "BatchResults"),
                                         401, 403, 413, 415, 422, 429, 503,
                                         body="BatchRequest")},
        "/v1/orders/{order_id}": {
            "get": _op("Read an order", _ok(200, "Order"), 401, 403, 404, params=[ORDER_ID]),
            "delete": _op("Cancel an order", _ok(200, "Order"), 401, 403, 404, 409,
                          params=[ORDER_ID]),
        },
        "/v1/orders/{order_id}/confirm": {
            "post": _op("Confirm a held order", _ok(200, "Order"), 401, 403, 404, 409,
                        params=[ORDER_ID]),
        },
        "/admin/skus": {"get": _op("Stock levels of every SKU", {"200": {
            "description": "ok", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"skus": {"type": "array", "items": {
                    "$ref": REF.format(name="SkuLevel")}}}}}}}}, 401, 403)},
        "/admin/skus/{sku}": {"get": _op("Stock level of one SKU", _ok(200, "SkuLevel"),
                                         401, 403, 404, params=[SKU])},
        "/admin/skus/{sku}/stock": {
            "post": _op("Import codes", _ok(200, "ImportResult"), 401, 403, 404, 413, 415, 422,
                        params=[SKU, {"name": "lot", "in": "query", "schema": {"type": "string"}},
                                {"name": "expires_at", "in": "query",
                                 "schema": {"type": "string"}}],
                        body_content={"text/plain": {"schema": {"type": "string"}},
                                      "text/csv": {"schema": {"type": "string"}}}),
            "delete": _op("Void the unsold codes of a lot", {"200": {"description": "ok"}},
                          401, 403, 404, 422,
                          params=[SKU, {"name": "lot", "in": "query", "required": True,
                                        "schema": {"type": "string"}}]),
        },
        "/q/{order_id}": {"get": _op(
            "Buyer's waiting page (HTML, signed link)",
            {"200": {"description": "the page", "content": {"text/html": {}}},
             "404": {"description": "link not valid (HTML page)"}},
            security="", params=[ORDER_ID, TOKEN, LANG])},
        "/q/{order_id}/state": {"get": _op("State the waiting page polls (never codes)",
                                           _ok(200, "PageState"), 404, security="",
                                           params=[ORDER_ID, TOKEN, LANG])},
        "/status": {"get": _op(
            "Maintenance and pause notices (HTML; JSON for Accept: application/json)",
            {"200": {"description": "notices", "content": {"text/html": {}, "application/json": {
                "schema": {"type": "object", "required": ["maintenance", "pauses"],
                           "properties": {"maintenance": {"type": ["object", "null"]},
                                          "pauses": {"type": "array",
                                                     "items": {"type": "object"}}}}}}}},
            security="", params=[LANG])},
        "/assets/{name}": {"get": _op("Stylesheet and script of the buyer pages",
                                      {"200": {"description": "text/css or text/javascript"}},
                                      404, security="",
                                      params=[{"name": "name", "in": "path", "required": True,
                                               "schema": {"type": "string"}}])},
        "/admin/maintenance": {"put": _op(
            "Set maintenance for every front door (off, read_only, full; starts_at schedules)",
            _ok(200, "MaintenanceState"), 401, 403, 413, 415, 422, body="MaintenanceState")},
        "/admin/config": {
            "get": _op("The running config (secrets redacted), its version and sha256",
                       CONFIG_VIEW, 401, 403),
            "put": _op("Replace the fleet's config; validated whole, applied everywhere within "
                       "1 s; refused (422, every error by key) leaves the running one",
                       CONFIG_VIEW, 401, 403, 413, 415, 422,
                       body_content={"application/toml": {"schema": {"type": "string"}},
                                     "application/json": {"schema": {"type": "object"}}})},
        "/admin/config/reload": {"post": _op(
            "Re-read the config file (same validation as PUT)", CONFIG_VIEW, 401, 403, 404,
            422)},
        "/admin/pause": {"post": _op(
            "Pause automatic delivery for a scope (global, storefront:<id>, sku:<id>)",
            OBJECT, 401, 403, 415, 422, body_content=_object(
                "scope", reason="string", until="string", action="string"))},
        "/admin/resume": {"post": _op(
            "End a pause of a scope (overrides a calendar window until its end)",
            OBJECT, 401, 403, 404, 415, 422, body_content=_object("scope"))},
        "/admin/pauses": {"get": _op("Pauses in force, scheduled, and operators' pauses",
                                     OBJECT, 401, 403)},
        "/admin/calendar": {"get": _op(
            "Pause windows from the calendars and ranges, and each calendar's holidays",
            OBJECT, 401, 403, 422, params=[_query("from"), _query("to")])},
        "/admin/review": {"get": _op("Orders waiting for review", OBJECT, 401, 403)},
        "/admin/review/{order_id}": {"post": _op(
            "Approve (claim it now) or reject an order waiting for review", OBJECT,
            401, 403, 404, 409, 415, 422, body_content=_object("decision"),
            params=[ORDER_ID])},
        "/admin/audit": {"get": _op(
            "Admin actions, config changes and code issuance since a moment", OBJECT,
            401, 403, 422, params=[_query("since"), _query("limit"), _query("after")])},
        "/healthz": {"get": _op("Process alive", {"200": {"description": "ok"}}, security="")},
        "/readyz": {"get": _op("Ready to take orders", {"200": {"description": "ready"},
                                                         "503": {"description": "not ready"}},
                               security="")},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {"description": "text"}},
                                security="")},
        "/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI 3.1"}},
                                     security="")},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "kamigate", "version": __version__,
                 "description": "Order ingestion for shops that sell secret codes."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


@functools.cache
def document_bytes() -> bytes:
    return msgspec.json.encode(build())
