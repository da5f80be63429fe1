"""Hundreds of malformed requests: every one answers 4xx problem+json, and none writes anything.

API.md: "No 5xx for anything a client sent; a 5xx body is problem+json too, never a traceback."
Unknown fields and engine-owned fields are rejected; bodies over the size cap answer 413.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import ClientResponse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.conftest import OPERATOR_KEY, SHOP_A_KEY, SHOP_B_KEY, VIEWER_KEY, Engine, auth

PROBLEM_JSON = "application/problem+json"
VALID: dict[str, Any] = {"sku": "card-100", "qty": 1, "buyer": "b1"}
OVER_64_KIB = 64 * 1024 + 1


@dataclass
class Case:
    name: str
    body: bytes
    content_type: str | None = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    key: str = SHOP_A_KEY


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def with_field(name: str, value: Any) -> dict[str, Any]:
    return {**VALID, name: value}


# -- /v1/orders ----------------------------------------------------------------------------------
WRONG_TYPES: list[Any] = [True, False, 1.5, 0.0, -2.5, 1e308, [], [1], ["card-100"], {},
                          {"a": "b"}, {"sku": "card-100"}]
# Whole floats (1.0, 0.0, 1e0) are integers in JSON (and JSON Schema): accepted, not listed.
BAD_INTS: list[Any] = [None, "1", "", "one", 10**30, -(10**30), 2**63, -(2**63) - 1,
                       *(v for v in WRONG_TYPES
                         if not (isinstance(v, float) and v.is_integer() and abs(v) < 2**63))]
BAD_STRINGS: list[Any] = [0, 1, -1, 10**30, *WRONG_TYPES]

BAD_VALUES: dict[str, list[Any]] = {
    # required
    "sku": [None, *BAD_STRINGS, "", "-card", ".card", "_card", "card 100", "card/100",
            "cärd", "card\n", "card-100\u0000", "a" * 65, "card-100 ", " card-100"],
    "qty": [*BAD_INTS, 0, -1, 11, 1000, 1001],
    "buyer": [None, *BAD_STRINGS, "", "b" * 129, "b" * 10000],
    # optional: null is allowed where the field is nullable, so it is not among these
    "buyer_ip": [*BAD_STRINGS, "", "1.2.3", "256.1.1.1", "1.2.3.4.5", "::g", "localhost",
                 "1.2.3.4/24", "1.2.3.4 ", "http://1.2.3.4", "a" * 65, "１.２.３.４"],
    "tier": [*BAD_INTS, -1, 10, 99],
    "hold_s": [*BAD_INTS, -1, 901, 86400, 86401],
    "wait_ms": [*[v for v in BAD_INTS if v is not None], -1, 10001, 86_400_000],
    "notify_url": [*BAD_STRINGS, "", "x", "ftp://example.com/hook", "http://", "https://",
                   "http://exa mple.com", "javascript:alert(1)", "//example.com/hook",
                   "http://example.com/" + "a" * 2048, "HTTP://EXAMPLE.COM"],
    "metadata": [*[v for v in BAD_STRINGS if not isinstance(v, dict)], "x", "",
                 {"a": 1}, {"a": None}, {"a": True}, {"a": 1.5}, {"a": []}, {"a": ["x"]},
                 {"a": {}}, {"a": {"b": "c"}}, {"ok": "x", "bad": 2},
                 {"a": "x" * 2049}, {"k" * 257: "v"},
                 {f"k{i:03d}": "v" * 100 for i in range(25)},
                 {f"k{i:04d}": "" for i in range(1000)}],
}

ENGINE_OWNED = ["order_id", "status", "storefront", "codes", "price", "prices", "unit_price",
                "created_at", "updated_at", "queue", "reason", "notice", "hold_expires_at",
                "idempotency_key", "position", "lots", "reply_to", "created_ms", "arrival"]
UNKNOWN_FIELDS = ["colour", "Sku", "QTY", "sku ", "", " ", "buyer\u0000", "_", "$where",
                  "__proto__", "qty2", "ключ"]


def field_cases() -> list[Case]:
    cases: list[Case] = []
    for name, values in BAD_VALUES.items():
        for i, value in enumerate(values):
            cases.append(Case(f"{name}[{i}]={value!r:.40}", js(with_field(name, value))))
    for name in ("sku", "qty", "buyer"):
        missing = {k: v for k, v in VALID.items() if k != name}
        cases.append(Case(f"missing {name}", js(missing)))
    for name in ENGINE_OWNED:
        for value in ("x", 1, None, ["C-1"], {"a": "b"}):
            cases.append(Case(f"engine-owned {name}={value!r}", js(with_field(name, value))))
    for name in UNKNOWN_FIELDS:
        cases.append(Case(f"unknown field {name!r}", js(with_field(name, "x"))))
    for name, value in (("sku", "card-reject"), ("qty", 5), ("buyer", "other")):
        # a second copy of a field, in a different case, is an unknown field too
        cases.append(Case(f"case-folded duplicate {name}", js({**VALID, name.upper(): value})))
    top_level: list[Any] = [None, True, 0, 1, -1, 1.5, "x", "", [], [VALID], [[VALID]], {},
                            {"orders": [VALID]}, {"order": VALID}]
    for value in top_level:
        cases.append(Case(f"top level {value!r:.40}", js(value)))
    return cases


def raw_cases() -> list[Case]:
    valid = js(VALID)
    raw: dict[str, bytes] = {
        "empty body": b"",
        "whitespace body": b"   \n\t ",
        "not json": b"sku=card-100&qty=1&buyer=b1",
        "single quotes": b"{'sku': 'card-100', 'qty': 1, 'buyer': 'b1'}",
        "trailing comma": b'{"sku": "card-100", "qty": 1, "buyer": "b1",}',
        "comment": b'{"sku": "card-100", /* c */ "qty": 1, "buyer": "b1"}',
        "unquoted key": b'{sku: "card-100", "qty": 1, "buyer": "b1"}',
        "NaN qty": b'{"sku": "card-100", "qty": NaN, "buyer": "b1"}',
        "Infinity qty": b'{"sku": "card-100", "qty": Infinity, "buyer": "b1"}',
        "hex qty": b'{"sku": "card-100", "qty": 0x1, "buyer": "b1"}',
        "leading zero qty": b'{"sku": "card-100", "qty": 01, "buyer": "b1"}',
        "plus qty": b'{"sku": "card-100", "qty": +1, "buyer": "b1"}',
        "huge exponent qty": b'{"sku": "card-100", "qty": 1e999999, "buyer": "b1"}',
        "two objects": valid + valid,
        "trailing garbage": valid + b"x",
        "BOM": b"\xef\xbb\xbf" + valid,
        "UTF-16": valid.decode().encode("utf-16"),
        "lone surrogate escape": b'{"sku": "card-100", "qty": 1, "buyer": "\\ud800"}',
        "bad escape": b'{"sku": "card-100", "qty": 1, "buyer": "\\x41"}',
        "raw control char": b'{"sku": "card-100", "qty": 1, "buyer": "a\x01b"}',
        "raw newline in string": b'{"sku": "card-100", "qty": 1, "buyer": "a\nb"}',
        "NUL byte": b'{"sku": "card-100", "qty": 1,\x00 "buyer": "b1"}',
        "deeply nested arrays": b"[" * 30000 + b"]" * 30000,
        "deeply nested objects": b'{"a":' * 10000 + b"1" + b"}" * 10000,
        "deeply nested metadata": b'{"sku": "card-100", "qty": 1, "buyer": "b1", "metadata": '
                                  + b'{"a":' * 10000 + b'"x"' + b"}" * 10001,
        "deeply nested unknown field": b'{"sku": "card-100", "qty": 1, "buyer": "b1", "x": '
                                       + b"[" * 20000 + b"]" * 20000 + b"}",
        "over 64 KiB": js(with_field("buyer", "b" * OVER_64_KIB)),
        "over 64 KiB of whitespace": b" " * OVER_64_KIB + valid,
        "over 64 KiB of metadata": js(with_field("metadata", {"pad": "x" * OVER_64_KIB})),
        "1 MiB": b"[" + b"1," * (512 * 1024) + b"1]",
    }
    for cut in (1, 2, 10, len(valid) // 2, len(valid) - 1):
        raw[f"truncated at {cut}"] = valid[:cut]
    cases = [Case(name, body) for name, body in raw.items()]
    for ctype in ("text/html", "application/xml", "application/x-www-form-urlencoded",
                  "multipart/form-data; boundary=zz", "image/png", "text/csv",
                  "application/jsonx", "application/javascript"):
        cases.append(Case(f"content type {ctype}", valid, content_type=ctype))
    return cases


def msgpack_cases() -> list[Case]:
    msgpack = msgspec.msgpack.encode
    ext = msgspec.msgpack.Ext(1, b"x")
    bodies: dict[str, bytes] = {
        "msgpack: json body": js(VALID),
        "msgpack: empty": b"",
        "msgpack: bad opcode": b"\xc1",
        "msgpack: truncated": msgpack(VALID)[:-1],
        "msgpack: array": msgpack([VALID]),
        "msgpack: qty string": msgpack(with_field("qty", "1")),
        "msgpack: qty huge": msgpack(with_field("qty", 2**64 - 1)),
        "msgpack: buyer bytes": msgpack(with_field("buyer", b"b1")),
        "msgpack: unknown field": msgpack(with_field("order_id", "o_x")),
        "msgpack: metadata ext": msgpack(with_field("metadata", {"a": ext})),
        "msgpack: int keys": msgpack({1: "card-100", 2: 1, 3: "b1"}),
        "msgpack: trailing": msgpack(VALID) + b"\x00",
    }
    return [Case(name, body, content_type="application/msgpack")
            for name, body in bodies.items()]


def header_cases() -> list[Case]:
    # (control characters cannot be sent: aiohttp's client refuses them in header values)
    bad_keys = {"empty": "", "129 chars": "k" * 129, "space": "a b", "spaces": "a  b  c",
                "cyrillic": "ключ", "latin-1": "clé", "emoji": "🔑", "1000 chars": "k" * 1000,
                "quote-space": '"a" "b"'}
    return [Case(f"Idempotency-Key {name}", js(VALID), headers={"Idempotency-Key": value})
            for name, value in bad_keys.items()]


def order_cases() -> list[Case]:
    return field_cases() + raw_cases() + msgpack_cases() + header_cases()


# -- /v1/orders/batch ----------------------------------------------------------------------------
def batch_cases() -> list[Case]:
    good = dict(VALID)
    bodies: dict[str, Any] = {
        "no items": {"orders": []},
        "1001 items": {"orders": [good] * 1001},
        "orders null": {"orders": None},
        "orders object": {"orders": good},
        "orders string": {"orders": "x"},
        "orders number": {"orders": 1},
        "orders missing": {},
        "top level array": [good],
        "top level null": None,
        "unknown top-level field": {"orders": [good], "wait_ms": 0},
        "engine-owned top-level field": {"orders": [good], "results": []},
        "item null": {"orders": [good, None]},
        "item number": {"orders": [good, 1]},
        "item array": {"orders": [good, [good]]},
        "item missing buyer": {"orders": [good, {"sku": "card-100", "qty": 1}]},
        "item qty string": {"orders": [good, with_field("qty", "1")]},
        "item qty huge": {"orders": [good, with_field("qty", 10**30)]},
        "item tier 10": {"orders": [good, with_field("tier", 10)]},
        "item wait_ms -1": {"orders": [good, with_field("wait_ms", -1)]},
        "item bad notify_url": {"orders": [good, with_field("notify_url", "ftp://x")]},
        "item metadata int": {"orders": [good, with_field("metadata", {"a": 1})]},
        "item order_id": {"orders": [good, with_field("order_id", "o_0000ffffffffffffffff")]},
        "item status": {"orders": [good, with_field("status", "fulfilled")]},
        "item codes": {"orders": [good, with_field("codes", ["FREE"])]},
        "item storefront": {"orders": [good, with_field("storefront", "shop-b")]},
        "item unknown field": {"orders": [good, with_field("colour", "red")]},
        "item idempotency_key empty": {"orders": [with_field("idempotency_key", "")]},
        "item idempotency_key space": {"orders": [with_field("idempotency_key", "a b")]},
        "item idempotency_key 129": {"orders": [with_field("idempotency_key", "k" * 129)]},
        "item idempotency_key int": {"orders": [with_field("idempotency_key", 5)]},
        "item idempotency_key unicode": {"orders": [with_field("idempotency_key", "ключ")]},
    }
    cases = [Case(f"batch {name}", js(body)) for name, body in bodies.items()]
    cases += [
        Case("batch empty body", b""),
        Case("batch not json", b"orders"),
        Case("batch truncated", js({"orders": [good, good]})[:-3]),
        Case("batch over 64 KiB", js({"orders": [with_field("buyer", "b" * 128)] * 600})),
        Case("batch text/html", js({"orders": [good]}), content_type="text/html"),
        Case("batch msgpack garbage", b"\xc1\xc1", content_type="application/msgpack"),
    ]
    return cases


# -- /admin/skus/{sku}/stock ---------------------------------------------------------------------
@dataclass
class StockCase:
    name: str
    path: str = "/admin/skus/card-100/stock"
    params: dict[str, str] = field(default_factory=lambda: {"lot": "lot1"})
    content_type: str = "text/plain"
    key: str = OPERATOR_KEY
    body: bytes = b"S-1\nS-2\nS-3\n"


def stock_cases() -> list[StockCase]:
    cases = [StockCase(f"lot {lot!r}", params={"lot": lot})
             for lot in ("-lot", ".lot", "lot 1", "lot/1", "lot#1", "lot?", "lötte", "a" * 65,
                         "lot\n1", "~lot", "lot~1")]
    cases += [StockCase(f"expires_at {value!r}", params={"lot": "lot1", "expires_at": value})
              for value in ("tomorrow", "2030-13-01T00:00:00Z", "2030-01-01",
                            "2030-01-01T00:00:00", "1893456000", "-1", "2030-02-30T00:00:00Z",
                            "2030-01-01T25:00:00Z", "2030-01-01T00:00:00+25:00", "null")]
    cases += [StockCase(f"content type {ctype}", content_type=ctype)
              for ctype in ("application/json", "text/html", "application/xml",
                            "multipart/form-data; boundary=zz",
                            "application/x-www-form-urlencoded", "application/msgpack",
                            "image/png")]
    cases += [
        StockCase("unknown sku", path="/admin/skus/no-such-sku/stock"),
        StockCase("bad sku pattern", path="/admin/skus/-card/stock"),
        StockCase("viewer key", key=VIEWER_KEY),
        StockCase("storefront key", key=SHOP_A_KEY),
        StockCase("unknown key", key="key-nobody"),
    ]
    return cases


# -- checks --------------------------------------------------------------------------------------
# What the door and the worker write by themselves: the fleet's config (and its audit entry),
# arrivals for surge alerts, the buyer-page secret, heartbeats and shard bookkeeping (the
# streams whose consumer groups a worker sets up: orders, the webhook outbox, points settling).
ALLOWED_KEY = re.compile(r"^kg:(workers|doors|config|audit|incoming(:sku)?|page_secret"
                         r"|\{s\d+\}:(orders|owner|drain|outbox|settle))$")


async def assert_nothing_written(redis: Redis) -> None:
    names = sorted(k.decode() for k in await redis.keys("*"))
    assert [k for k in names if not ALLOWED_KEY.match(k)] == [], names
    for name in names:
        if name.endswith(":orders"):
            assert await redis.xlen(name) == 0, name


async def problem_violation(resp: ClientResponse, name: str) -> str | None:
    """Why this answer breaks the contract for a malformed request, or None."""
    text = await resp.text()
    if not 400 <= resp.status < 500:
        return f"{name}: HTTP {resp.status}: {text[:200]}"
    if resp.headers.get("Content-Type", "").split(";")[0].strip() != PROBLEM_JSON:
        return f"{name}: Content-Type {resp.headers.get('Content-Type')!r}"
    if "Traceback" in text or 'File "' in text:
        return f"{name}: traceback in body"
    try:
        body = json.loads(text)
    except ValueError:
        return f"{name}: body is not JSON: {text[:200]}"
    if not isinstance(body, dict) or body.get("status") != resp.status:
        return f"{name}: problem status does not match: {text[:200]}"
    if body.get("type") != f"/problems/{body.get('code')}" or not body.get("detail"):
        return f"{name}: incomplete problem: {text[:200]}"
    if body["code"] == "invalid_request" and not (
        isinstance(body.get("errors"), list) and body["errors"]
        and all(isinstance(e, dict) and isinstance(e.get("field"), str) for e in body["errors"])
    ):
        return f"{name}: invalid_request without field errors: {text[:200]}"
    return None


async def post_case(engine: Engine, path: str, case: Case) -> ClientResponse:
    headers = {**auth(case.key), **case.headers}
    if case.content_type is not None:
        headers["Content-Type"] = case.content_type
    # BytesIO: aiohttp warns when a large body is passed as raw bytes
    return await engine.http.post(path, data=io.BytesIO(case.body), headers=headers)


ORDER_CASES = order_cases()
BATCH_CASES = batch_cases()
STOCK_CASES = stock_cases()


def test_there_are_hundreds_of_cases() -> None:
    assert len(ORDER_CASES) >= 200, len(ORDER_CASES)
    assert len(BATCH_CASES) >= 30
    names = [c.name for c in ORDER_CASES + BATCH_CASES]
    assert len(names) == len(set(names))


async def test_malformed_orders_are_4xx_problems_and_write_nothing(
    engine: Engine, redis: Redis
) -> None:
    violations = []
    for case in ORDER_CASES:
        found = await problem_violation(await post_case(engine, "/v1/orders", case), case.name)
        if found:
            violations.append(found)
    assert violations == [], f"{len(violations)} of {len(ORDER_CASES)}:\n" + "\n".join(violations)
    await assert_nothing_written(redis)


async def test_malformed_orders_from_every_key_write_nothing(engine: Engine, redis: Redis) -> None:
    """A sample again with the other storefront's key, and with no key at all (401 first)."""
    violations = []
    for case in ORDER_CASES[::7]:
        for key in (SHOP_B_KEY, "key-nobody"):
            case_with_key = Case(case.name, case.body, case.content_type, case.headers, key)
            resp = await post_case(engine, "/v1/orders", case_with_key)
            found = await problem_violation(resp, f"{key}: {case.name}")
            if found:
                violations.append(found)
    assert violations == [], "\n".join(violations)
    await assert_nothing_written(redis)


async def test_malformed_batches_are_4xx_problems_and_write_nothing(
    engine: Engine, redis: Redis
) -> None:
    violations = []
    for case in BATCH_CASES:
        found = await problem_violation(await post_case(engine, "/v1/orders/batch", case),
                                        case.name)
        if found:
            violations.append(found)
    assert violations == [], "\n".join(violations)
    await assert_nothing_written(redis)


async def test_batch_items_rejected_by_sku_checks_write_nothing(
    engine: Engine, redis: Redis
) -> None:
    """Items that decode but fail the SKU checks are inline problems; none is admitted."""
    items = [with_field("sku", "no-such-sku"), with_field("qty", 11),
             {**VALID, "sku": "card-limited", "qty": 6}, with_field("buyer_ip", "nope"),
             with_field("hold_s", 901), with_field("metadata", {"a": "x" * 1500,
                                                                "b": "y" * 1500})]
    resp = await engine.http.post("/v1/orders/batch", json={"orders": items},
                                  headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    results = (await resp.json())["results"]
    assert [r["code"] for r in results] == ["unknown_sku"] + ["invalid_request"] * 5
    assert [r["errors"][0]["field"] for r in results[1:]] == [
        "orders[1].qty", "orders[2].qty", "orders[3].buyer_ip", "orders[4].hold_s",
        "orders[5].metadata"]
    await assert_nothing_written(redis)


async def test_malformed_stock_imports_are_4xx_problems_and_import_nothing(
    engine: Engine, redis: Redis
) -> None:
    violations = []
    for case in STOCK_CASES:
        resp = await engine.http.post(
            case.path, data=case.body, params=case.params,
            headers={**auth(case.key), "Content-Type": case.content_type},
        )
        found = await problem_violation(resp, case.name)
        if found:
            violations.append(found)
    assert violations == [], "\n".join(violations)
    await assert_nothing_written(redis)
    levels = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    assert levels["imported"] == 0 and levels["available"] == 0 and levels["lots"] == []


def _with_buyer(raw: bytes) -> bytes:
    return b'{"sku": "card-100", "qty": 1, "buyer": "' + raw + b'"}'


INVALID_UTF8: dict[str, tuple[str, bytes, str]] = {
    "json string value": ("/v1/orders", _with_buyer(b"\xff\xfe"), "application/json"),
    "json overlong encoding": ("/v1/orders", _with_buyer(b"\xc0\xaf"), "application/json"),
    "json encoded surrogate": ("/v1/orders", _with_buyer(b"\xed\xa0\x80"), "application/json"),
    "json object key": ("/v1/orders", b'{"sku": "card-100", "qty": 1, "buyer": "b", "\xff": 1}',
                        "application/json"),
    "json batch item": ("/v1/orders/batch", b'{"orders": [' + _with_buyer(b"\xff") + b"]}",
                        "application/json"),
    "msgpack string value": ("/v1/orders",
                             msgspec.msgpack.encode(VALID).replace(b"\xa2b1", b"\xa2\xff1"),
                             "application/msgpack"),
}


@pytest.mark.parametrize("case", list(INVALID_UTF8))
async def test_invalid_utf8_is_a_client_error(engine: Engine, redis: Redis, case: str) -> None:
    path, body, ctype = INVALID_UTF8[case]
    resp = await engine.http.post(path, data=body,
                                  headers={**auth(SHOP_A_KEY), "Content-Type": ctype})
    assert await problem_violation(resp, case) is None
    assert resp.status == 422
    await assert_nothing_written(redis)


async def test_invalid_utf8_outside_strings_is_a_client_error(engine: Engine) -> None:
    for body in (b"\xff\xfe{}", b'{"sku": "card-100", "qty": \xff}', b"\x80"):
        resp = await engine.http.post("/v1/orders", data=body,
                                      headers={**auth(SHOP_A_KEY),
                                               "Content-Type": "application/json"})
        assert await problem_violation(resp, repr(body)) is None


async def test_over_size_import_adds_nothing(engine_factory: Any, redis: Redis) -> None:
    from tests.conftest import make_settings

    engine = await engine_factory(make_settings(server={"max_import_bytes": 200_000}))
    body = "\n".join(f"BIG-{i:08d}" for i in range(40_000)).encode()  # ~520 KB
    resp = await engine.http.post("/admin/skus/card-100/stock", data=body, params={"lot": "big"},
                                  headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
    assert resp.status == 413
    levels = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    assert levels["imported"] == 0 and levels["available"] == 0, levels


async def test_batch_idempotency_key_with_trailing_newline(engine: Engine, redis: Redis) -> None:
    """API.md: an idempotency key is 1-128 visible ASCII characters; a newline is not one."""
    batch = {"orders": [with_field("idempotency_key", "k-1\n")]}
    resp = await engine.http.post("/v1/orders/batch", json=batch, headers=auth(SHOP_A_KEY))
    assert resp.status == 422, await resp.text()
    await assert_nothing_written(redis)


async def test_notify_url_with_trailing_newline(engine: Engine, redis: Redis) -> None:
    body = {**with_field("notify_url", "https://example.com/hook\n"), "wait_ms": 0}
    resp = await engine.http.post("/v1/orders", json=body, headers=auth(SHOP_A_KEY))
    assert resp.status == 422, await resp.text()
    await assert_nothing_written(redis)


async def test_stock_lot_with_trailing_newline(engine: Engine, redis: Redis) -> None:
    resp = await engine.http.post("/admin/skus/card-100/stock", data="T-1",
                                  params={"lot": "lot1\n"},
                                  headers={**auth(OPERATOR_KEY), "Content-Type": "text/plain"})
    assert resp.status == 422, await resp.text()
    await assert_nothing_written(redis)


# -- property: arbitrary JSON never earns a 5xx --------------------------------------------------
JSON_LEAF = (st.none() | st.booleans() | st.integers()
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
JSON_VALUE = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from([*VALID, "buyer_ip", "tier", "hold_s", "wait_ms", "notify_url",
                               "metadata", "order_id", "status", "codes"]) | st.text(max_size=8)
NEAR_ORDER = st.fixed_dictionaries(
    {"sku": st.sampled_from(["card-100", "card-reject", "card-limited", "nope"]) | JSON_VALUE,
     "qty": st.integers(-3, 12) | JSON_VALUE,
     "buyer": st.text(max_size=130) | JSON_VALUE},
    optional={"tier": st.integers(-2, 11) | JSON_VALUE,
              "wait_ms": st.just(0) | JSON_VALUE,
              "hold_s": st.integers(-1, 1000) | JSON_VALUE,
              "buyer_ip": st.sampled_from(["1.2.3.4", "::1", "x"]) | JSON_VALUE,
              "notify_url": st.sampled_from(["https://example.com/h", "ftp://x"]) | JSON_VALUE,
              "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=20),
                                          max_size=3) | JSON_VALUE},
)
BODIES = JSON_VALUE | st.dictionaries(FIELD_NAMES, JSON_VALUE, max_size=8) | NEAR_ORDER


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES)
async def test_arbitrary_json_never_earns_a_5xx(engine: Engine, body: Any) -> None:
    if isinstance(body, dict) and "wait_ms" not in body:
        body = {**body, "wait_ms": 0}  # admitted ones answer at once: keep the run short
    resp = await engine.http.post("/v1/orders", data=json.dumps(body).encode(),
                                  headers={**auth(SHOP_A_KEY), "Content-Type": "application/json"})
    text = await resp.text()
    assert resp.status < 500, text
    if resp.status >= 400:
        assert await problem_violation(resp, "hypothesis") is None, text
