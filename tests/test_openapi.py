"""GET /openapi.json: an OpenAPI 3.1 document of every route, and only of real routes.

API.md: "An OpenAPI 3.1 document of all routes is served at GET /openapi.json and kept true by
tests."
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from engine import errors
from tests.conftest import Engine, make_settings

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
async def doc(engine: Engine) -> dict[str, Any]:
    resp = await engine.http.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body: dict[str, Any] = await resp.json()
    return body


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"route without a path: {route!r}"
        found.add((route.method, path))
    return found


def doc_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items()
            for method in item if method in METHODS}


def test_app_has_the_contract_routes() -> None:
    from engine.http.app import create_app

    routes = app_routes(create_app(make_settings(), "redis://unused"))
    for route in [("POST", "/v1/orders"), ("POST", "/v1/orders/batch"),
                  ("GET", "/v1/orders/{order_id}"), ("DELETE", "/v1/orders/{order_id}"),
                  ("POST", "/v1/orders/{order_id}/confirm"),
                  ("POST", "/admin/skus/{sku}/stock"), ("DELETE", "/admin/skus/{sku}/stock"),
                  ("GET", "/admin/skus"), ("GET", "/admin/skus/{sku}"), ("GET", "/healthz"),
                  ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json")]:
        assert route in routes


async def test_document_is_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    assert isinstance(doc["info"]["title"], str) and doc["info"]["title"]
    assert isinstance(doc["info"]["version"], str) and doc["info"]["version"]
    assert isinstance(doc["paths"], dict) and doc["paths"]
    assert isinstance(doc["components"]["schemas"], dict)
    for path, item in doc["paths"].items():
        assert path.startswith("/"), path
        assert item, path
        for method, op in item.items():
            assert method in METHODS, (path, method)
            assert op["responses"], (path, method)
            for status in op["responses"]:
                assert re.fullmatch(r"[1-5]\d\d|[1-5]XX|default", status), (path, status)
                assert op["responses"][status]["description"], (path, method, status)


async def test_every_route_is_documented(engine: Engine, doc: dict[str, Any]) -> None:
    assert engine.client is not None
    missing = app_routes(engine.client.app) - doc_routes(doc)
    assert missing == set()


async def test_the_document_documents_itself(doc: dict[str, Any]) -> None:
    assert ("GET", "/openapi.json") in doc_routes(doc)


async def test_every_documented_route_is_real(engine: Engine, doc: dict[str, Any]) -> None:
    assert engine.client is not None
    assert doc_routes(doc) - app_routes(engine.client.app) == set()


async def test_path_parameters_are_declared(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (method, path)
            for param in op.get("parameters", []):
                assert param["in"] in ("path", "query", "header", "cookie")
                if param["in"] == "path":
                    assert param["required"] is True


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                assert isinstance(value, str)
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def test_refs_resolve_within_components(doc: dict[str, Any]) -> None:
    refs = set(_refs(doc))
    assert refs, "the document uses no $ref at all"
    for ref in refs:
        assert ref.startswith("#/components/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            assert isinstance(node, dict) and part in node, f"unresolved {ref}"
            node = node[part]
        assert isinstance(node, dict) and node, ref


async def test_security_schemes_resolve(doc: dict[str, Any]) -> None:
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for requirement in op.get("security", []):
                assert set(requirement) <= set(schemes), (method, path)
            guarded = path.startswith(("/v1/", "/admin/"))
            assert bool(op.get("security")) == guarded, (method, path)


async def test_problem_schema_knows_every_code(doc: dict[str, Any]) -> None:
    problem = doc["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "code", "detail"}
    assert set(problem["properties"]["code"]["enum"]) == {p.code for p in errors.ALL}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in response:
                    assert set(response["content"]) == {"application/problem+json"}, \
                        (method, path, status)


async def test_order_request_schema_matches_the_contract(doc: dict[str, Any]) -> None:
    schema = doc["components"]["schemas"]["OrderRequest"]
    assert set(schema["properties"]) == {"sku", "qty", "buyer", "buyer_ip", "tier", "hold_s",
                                         "wait_ms", "notify_url", "metadata", "points",
                                         "coupons"}
    assert set(schema["required"]) == {"sku", "qty", "buyer"}
    assert schema.get("additionalProperties") is False
    batch = doc["components"]["schemas"]["BatchRequest"]["properties"]["orders"]
    assert batch["minItems"] == 1 and batch["maxItems"] == 1000


async def test_document_is_the_same_on_every_request(engine: Engine) -> None:
    first = await (await engine.http.get("/openapi.json")).read()
    second = await (await engine.http.get("/openapi.json")).read()
    assert first == second
