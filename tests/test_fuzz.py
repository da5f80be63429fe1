"""Fuzz targets (hypothesis): the order decoder, the stock importer and the config loader.

Bounded for the default run (a few hundred examples per target, the file in well under a
minute); set KAMIGATE_FUZZ_EXAMPLES=N to run N examples per target instead.

- orders: arbitrary bytes, arbitrary JSON-ish documents (recursive strategies, `from_type`),
  near-valid orders with mutated fields (huge ints, unicode, NaN, wrong types, unknown fields)
  and msgpack, to POST /v1/orders and /v1/orders/batch: every answer is < 500, problem+json
  when >= 400, and a 4xx writes nothing (no new key, no new stream entry).
- stock: arbitrary text/CSV bodies: never 5xx; `added + duplicates + invalid` accounts for the
  non-empty lines; available equals the distinct valid codes imported so far; no code is twice
  in stock.
- config: `parse_toml` and `from_mapping` on arbitrary TOML text and nested mappings: a
  Settings, or ConfigError whose errors are all `key: message`; never another exception.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import weakref
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine import config
from engine.store import keys
from engine.wire import BatchItem, OrderRequest
from tests.conftest import (
    ADMIN_KEY,
    OPERATOR_KEY,
    SHOP_A_KEY,
    VIEWER_KEY,
    Engine,
    auth,
    settings_dict,
)
from tests.test_malformed import ALLOWED_KEY, PROBLEM_JSON, problem_violation

EXAMPLES = int(os.environ.get("KAMIGATE_FUZZ_EXAMPLES", "0")) or None
SHARDS = 4  # make_settings()'s shard count


def fuzz(default: int) -> Any:
    return settings(max_examples=EXAMPLES or default, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow, HealthCheck.data_too_large])


# -- strategies: JSON-ish values -----------------------------------------------------------------
HUGE_INTS = st.sampled_from([2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1,
                             10**30, -(10**30), 10**400])
FLOATS = st.floats() | st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324])
TEXT = st.text(max_size=40) | st.sampled_from(["", "card-100", "ключ", "卡密", "🔑", "\u0000",
                                               "a\nb", "\ud800", "\u202e", "x" * 3000])
LEAF = st.none() | st.booleans() | st.integers() | HUGE_INTS | FLOATS | TEXT
JSONISH = st.recursive(
    LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=20,
)
VALID_ORDER: dict[str, Any] = {"sku": "card-100", "qty": 1, "buyer": "fz"}
FIELDS = ["sku", "qty", "buyer", "buyer_ip", "tier", "hold_s", "wait_ms", "notify_url",
          "metadata", "idempotency_key", "order_id", "status", "codes"]
FIELD_VALUES: dict[str, Any] = {
    "sku": st.sampled_from(["card-100", "card-limited", "card-reject", "nope", "-x", "a" * 65]),
    "qty": st.integers(-2, 12) | HUGE_INTS,
    "buyer": TEXT,
    "buyer_ip": st.sampled_from(["1.2.3.4", "::1", "fe80::1%eth0", "999.1.1.1", "x"]),
    "tier": st.integers(-1, 10),
    "hold_s": st.integers(-1, 1000),
    "wait_ms": st.integers(-1, 10001),
    "notify_url": st.sampled_from(["https://example.com/h", "ftp://x", "http://a b"]),
    "metadata": st.dictionaries(TEXT, TEXT, max_size=4),
    "idempotency_key": st.sampled_from(["k1", "k2", "", "a b", "k" * 129]),
}


@st.composite
def near_orders(draw: st.DrawFn, batch_item: bool = False, most: int = 3,
                plausible: bool = False) -> dict[str, Any]:
    """A valid order with up to `most` fields changed, removed, or added (plausible values
    or, unless `plausible`, arbitrary ones)."""
    body: dict[str, Any] = dict(VALID_ORDER, buyer=f"fz-{draw(st.integers(0, 3))}")
    for _ in range(draw(st.integers(0, most))):
        if plausible:
            name = draw(st.sampled_from(list(FIELD_VALUES)))
            body[name] = draw(FIELD_VALUES[name])
            continue
        name = draw(st.sampled_from(FIELDS) | TEXT)
        action = draw(st.sampled_from(["plausible", "arbitrary", "delete"]))
        if action == "delete":
            body.pop(name, None)
        elif action == "plausible" and name in FIELD_VALUES:
            body[name] = draw(FIELD_VALUES[name])
        else:
            body[name] = draw(JSONISH)
    if not batch_item:
        body.pop("idempotency_key", None)
    return body


def typed_orders(kind: type[OrderRequest]) -> st.SearchStrategy[dict[str, Any]]:
    """`from_type` of the wire struct: every field of the right Python type, but none of the
    constraints (patterns, ranges) honoured."""
    return st.from_type(kind).map(msgspec.to_builtins)


def encode_json(value: Any) -> bytes:
    """JSON as a sloppy client writes it: NaN and Infinity literals, lone surrogates escaped."""
    return json.dumps(value, allow_nan=True).encode()


def _to_msgpack(value: Any) -> bytes:
    try:
        return msgspec.msgpack.encode(value)
    except (OverflowError, TypeError, UnicodeEncodeError):  # ints past 64 bits, surrogates
        return msgspec.msgpack.encode(repr(value))


ORDER_DOCS = JSONISH | near_orders() | near_orders(plausible=True) | typed_orders(OrderRequest)
ORDER_BODIES = st.one_of(
    st.tuples(ORDER_DOCS.map(encode_json), st.just("application/json")),
    st.tuples(st.binary(max_size=300), st.sampled_from(["application/json",
                                                        "application/msgpack"])),
    st.tuples(near_orders().map(encode_json).flatmap(
        lambda b: st.integers(0, len(b)).map(lambda cut: b[:cut])), st.just("application/json")),
    st.tuples((near_orders() | JSONISH).map(_to_msgpack), st.just("application/msgpack")),
)


BATCH_DOCS = st.one_of(
    st.fixed_dictionaries({"orders": st.lists(near_orders(batch_item=True) | JSONISH,
                                              min_size=0, max_size=5)}),
    # mostly decodable items, so the per-item checks and admissions run too
    st.fixed_dictionaries({"orders": st.lists(near_orders(batch_item=True, plausible=True),
                                              min_size=1, max_size=4)}),
    st.fixed_dictionaries({"orders": st.lists(typed_orders(BatchItem), max_size=3)}),
    st.dictionaries(st.sampled_from(["orders", "wait_ms", "x"]) | TEXT, JSONISH, max_size=3),
    JSONISH,
)
BATCH_BODIES = st.one_of(
    st.tuples(BATCH_DOCS.map(encode_json), st.just("application/json")),
    st.tuples(st.binary(max_size=300), st.sampled_from(["application/json",
                                                        "application/msgpack"])),
)


# -- checks --------------------------------------------------------------------------------------
Snapshot = tuple[frozenset[str], tuple[bytes, ...]]
# Beside test_malformed's ALLOWED_KEY: the webhook dispatcher's retry bookkeeping, which it
# writes in the background for orders admitted (with a notify_url) by earlier examples.
BACKGROUND_KEY = re.compile(r"^kg:\{s\d+\}:webhook:")


async def snapshot(redis: Redis) -> Snapshot:
    """What a request could have written: keys beyond the door's and worker's own
    bookkeeping (test_malformed.ALLOWED_KEY), and each order stream's last entry id."""
    names = frozenset(k.decode() for k in await redis.keys("*")
                      if not ALLOWED_KEY.match(k.decode()) and not BACKGROUND_KEY.match(k.decode()))
    last: list[bytes] = []
    for shard in range(SHARDS):
        try:
            info = await redis.xinfo_stream(keys.stream(shard))
        except ResponseError:  # no stream yet (the worker creates them as it starts)
            last.append(b"0-0")
            continue
        last.append(info["last-generated-id"])
    return names, tuple(last)


async def quiesce(redis: Redis, timeout: float = 10.0) -> None:
    """Wait until the worker has read and acknowledged every stream entry, so what it writes
    for earlier orders is not blamed on the next request."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        busy = False
        for shard in range(SHARDS):
            try:
                info = await redis.xinfo_stream(keys.stream(shard))
                groups = await redis.xinfo_groups(keys.stream(shard))
            except ResponseError:
                continue
            group = next((g for g in groups if g["name"] == keys.GROUP.encode()), None)
            busy |= group is None or group["pending"] > 0 or \
                group["last-delivered-id"] != info["last-generated-id"]
        if not busy:
            return
        assert loop.time() < deadline, "the worker did not drain the streams"
        await asyncio.sleep(0.01)


def order_ids(value: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(value, dict):
        if isinstance(value.get("order_id"), str):
            found.add(value["order_id"])
        for item in value.get("results") or []:
            found |= order_ids(item)
    return found


async def record_ids(redis: Redis) -> set[str]:
    return {k.decode().rsplit(":", 1)[1] for k in await redis.keys("kg:{s*}:o:*")}


async def post_and_check(engine: Engine, redis: Redis, path: str, body: bytes,
                         ctype: str) -> None:
    before, records_before = await snapshot(redis), await record_ids(redis)
    resp = await engine.http.post(path, data=io.BytesIO(body),
                                  headers={**auth(SHOP_A_KEY), "Content-Type": ctype})
    text = await resp.text()
    event(f"{path} {resp.status}")
    assert resp.status < 500, f"{resp.status} for {body[:300]!r}: {text[:500]}"
    doc: Any = None
    if resp.status >= 400:
        assert resp.headers.get("Content-Type", "").split(";")[0] == PROBLEM_JSON, text
        found = await problem_violation(resp, repr(body[:200]))
        assert found is None, found
        doc = json.loads(text)
        if "order_id" not in doc:  # admitted and then decided (409 sold_out...) is a write
            after = await snapshot(redis)
            assert after == before, (f"a {resp.status} wrote: new keys "
                                     f"{sorted(after[0] - before[0])}, streams {before[1]} -> "
                                     f"{after[1]}: {text[:300]}")
            return
    else:
        doc = json.loads(text)
    # Admitted: let the worker finish, then nothing but the admitted orders was recorded.
    await quiesce(redis)
    if path.endswith("/batch") and resp.status == 200:
        sent = json.loads(body)["orders"]
        assert len(doc["results"]) == len(sent)
        for item in doc["results"]:
            if "type" in item:  # an inline problem
                assert 400 <= item["status"] < 500 and item["type"] == f"/problems/{item['code']}"
    new = await record_ids(redis) - records_before
    assert new <= order_ids(doc), f"orders recorded but never answered: {new - order_ids(doc)}"


@fuzz(300)
@given(case=ORDER_BODIES)
@example(case=(b'{"sku": "card-100", "qty": NaN, "buyer": "b"}', "application/json"))
@example(case=(b'{"sku": "card-100", "qty": 1e400, "buyer": "b"}', "application/json"))
@example(case=(b'{"sku": "card-100", "qty": 18446744073709551616, "buyer": "b"}',
               "application/json"))
async def test_fuzz_order_decoder(engine: Engine, redis: Redis, case: tuple[bytes, str]) -> None:
    await post_and_check(engine, redis, "/v1/orders", *case)


@fuzz(200)
@given(case=BATCH_BODIES)
async def test_fuzz_batch_decoder(engine: Engine, redis: Redis, case: tuple[bytes, str]) -> None:
    await post_and_check(engine, redis, "/v1/orders/batch", *case)


# -- the stock importer ------------------------------------------------------------------------
POOL = [f"P-{i:02d}" for i in range(12)] + ["p-00", " P-01 ", "P-02\t", "卡密-1", "x" * 512]
EXPIRIES = ["2099-01-01T00:00:00Z", "2099-06-01T12:00:00+08:00", "", " ", "garbage",
            "2099-01-01", "2099-13-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59-14:00", "2099-01-01T00:00:00Z,extra"]
LINE = st.one_of(
    st.sampled_from(POOL).map(str.encode),
    st.from_regex(r"[A-Z0-9][A-Z0-9-]{3,11}", fullmatch=True).map(str.encode),  # fresh codes
    st.text(max_size=30).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.binary(max_size=20),  # invalid UTF-8, NUL bytes
    st.sampled_from([b"", b" ", b"\t", b"\x00", b"\xff\xfe", b"\xe5\x8d", "\u3000".encode(),
                     b"x" * 513, b"L" * 5000, b"code", b"Code,expires_at"]),
)
CSV_LINE = st.one_of(
    LINE,
    st.tuples(st.sampled_from(POOL), st.sampled_from(EXPIRIES)).map(
        lambda t: f"{t[0]},{t[1]}".encode()),
)
_STOCK_MODEL: weakref.WeakKeyDictionary[Engine, set[str]] = weakref.WeakKeyDictionary()
SEP = st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b"\r\r\n", b"\n\r"])


def bodies(line: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.tuples(line, SEP), max_size=25).map(
        lambda parts: b"".join(a + b for a, b in parts))


def _timestamp_ok(text: str) -> bool:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def expected_lines(body: bytes, csv: bool) -> list[str | None]:
    """The reference reading of an import: per non-empty line the code it carries, or None
    when the line is not a usable code (undecodable, unprintable, over 512 characters, or a
    CSV row with a bad expiry). Lines end at LF; a CSV header row ("code[,...]") first is
    not a line of stock."""
    out: list[str | None] = []
    first = True
    for raw in body.split(b"\n"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append(None)
            first = False
            continue
        if not text.strip():
            continue
        field, _, rest = text.partition(",") if csv else (text, "", "")
        if csv and first and field.strip().lower() == "code":
            first = False
            continue
        first = False
        code = field.strip()
        ok = 0 < len(code) <= 512 and code.isprintable() and (
            not rest.strip() or _timestamp_ok(rest.strip()))
        out.append(code if ok else None)
    return out


async def stock_codes(redis: Redis, sku: str) -> list[str]:
    shard = keys.shard_of_sku(sku, SHARDS)
    found: list[str] = []
    for lot in await redis.hkeys(keys.lots(sku, shard)):
        found += [c.decode() for c in
                  await redis.lrange(keys.lot_codes(sku, lot.decode(), shard), 0, -1)]
    return found


async def import_body(engine: Engine, body: bytes, ctype: str, lot: str) -> dict[str, Any]:
    resp = await engine.http.post(
        "/admin/skus/card-100/stock", data=io.BytesIO(body), params={"lot": lot},
        headers={**auth(OPERATOR_KEY), "Content-Type": ctype})
    text = await resp.text()
    assert resp.status == 200, f"{resp.status} for {body[:300]!r}: {text[:500]}"
    result: dict[str, Any] = json.loads(text)
    return result


@fuzz(150)
@given(calls=st.lists(st.one_of(
    st.tuples(bodies(LINE), st.sampled_from(["text/plain", "application/octet-stream"])),
    st.tuples(bodies(CSV_LINE), st.just("text/csv")),
), min_size=1, max_size=3))
async def test_fuzz_stock_import(engine: Engine, redis: Redis,
                                 calls: list[tuple[bytes, str]]) -> None:
    # The engine (and its Redis) lives for the whole run: the stock model does too.
    in_stock = _STOCK_MODEL.setdefault(engine, set())
    for body, ctype in calls:
        lines = expected_lines(body, ctype == "text/csv")
        result = await import_body(engine, body, ctype, f"fz{len(in_stock) % 5}")
        event(f"{ctype}: " + ", ".join(k for k in ("added", "duplicates", "invalid")
                                        if result[k]))
        counted = result["added"] + result["duplicates"] + result["invalid"]
        assert counted == len(lines), (counted, len(lines), result, body[:300])
        valid = [c for c in lines if c is not None]
        new = set(valid) - in_stock
        assert (result["added"], result["duplicates"], result["invalid"]) == (
            len(new), len(valid) - len(new), len(lines) - len(valid)), (result, body[:300])
        in_stock |= new
        assert result["available"] == len(in_stock)
    held = await stock_codes(redis, "card-100")
    assert len(held) == len(set(held)), "a code is twice in stock"
    assert set(held) == in_stock
    level = await (await engine.http.get("/admin/skus/card-100",
                                         headers=auth(VIEWER_KEY))).json()
    assert level["available"] == level["imported"] == len(in_stock)


async def test_csv_rows_starting_with_code_are_not_headers(engine: Engine) -> None:
    body = b"code,expires_at\nA-1\nCODE-0001\nCodex-7,2099-01-01T00:00:00Z\n"
    result = await import_body(engine, body, "text/csv", "hdr")
    assert result["added"] + result["duplicates"] + result["invalid"] == 3, result
    assert result["added"] == 3, result


async def test_csv_sub_lot_can_be_voided(engine: Engine) -> None:
    await import_body(engine, b"SUB-1,2099-01-01T00:00:00Z\nSUB-2\n", "text/csv", "sub")
    level = await (await engine.http.get("/admin/skus/card-100", headers=auth(VIEWER_KEY))).json()
    lots = {lot["lot"] for lot in level["lots"]}
    assert lots == {"sub", "sub~4070908800"}, lots
    resp = await engine.http.delete("/admin/skus/card-100/stock", params={"lot": "sub~4070908800"},
                                    headers=auth(OPERATOR_KEY))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["voided"] == 1


# -- the config loader ---------------------------------------------------------------------------
SECTION_NAMES = ["server", "redis", "orders", "worker", "webhooks", "limits", "waiting_room",
                 "backpressure", "maintenance", "blocklist", "review", "surge", "breaker",
                 "audit", "storefronts", "admins", "skus", "pauses", "calendars"]
FIELD_NAMES = ["host", "port", "public_url", "url", "shards", "appendfsync", "default_wait_ms",
               "batch_size", "lease_s", "timeout_s", "global", "per_buyer", "rate", "burst",
               "enabled", "capacity", "id", "key_sha256", "role", "max_qty", "on_sold_out",
               "limit", "country", "timezone", "subdiv", "scope", "calendar", "starts_at",
               "ends_at", "action", "mode", "buyers", "ips", "buyer_patterns", "factor",
               "failures", "open_s", "retention_s", "webhook_secret", "page_secret"]
TOML_LEAF = st.one_of(
    st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), FLOATS,
    st.text(max_size=20),
    st.sampled_from(["embedded", "redis://x", "env:NOPE", "global", "sku:card-100", "CN",
                     "Asia/Shanghai", "admin", "queue", "read_only", "2026-02-01T00:00:00Z",
                     "a" * 64, "0" * 64, "1.2.3.0/24", "(", "a{4}", "../etc", ""]),
    st.datetimes(timezones=st.none() | st.just(UTC)), st.dates(), st.times(),
)
TOML_VALUE = st.recursive(
    TOML_LEAF,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)
CONFIG_DOCS = st.dictionaries(
    st.sampled_from(SECTION_NAMES) | st.text(max_size=8),
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), TOML_VALUE, max_size=6)
    | st.lists(st.dictionaries(st.sampled_from(FIELD_NAMES), TOML_VALUE, max_size=6),
               max_size=3)
    | TOML_VALUE,
    max_size=6,
)
MAPPING_DOCS = st.recursive(  # from_mapping also takes JSON (PUT /admin/config): nulls too
    st.none() | TOML_LEAF,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
ERROR_FORM = re.compile(r"^(?P<key>.+?): (?P<message>\S.*)$", re.S)


def toml_key(key: str) -> str:
    return json.dumps(key)  # a basic string: JSON's escapes are TOML's


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def to_toml(doc: dict[str, Any]) -> str:
    """TOML for a document: tables for dicts, arrays of tables for lists of dicts."""
    head, tail = [], []
    for name, value in doc.items():
        if isinstance(value, dict):
            tail.append(f"[{toml_key(name)}]")
            tail += [f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                tail.append(f"[[{toml_key(name)}]]")
                tail += [f"{toml_key(k)} = {toml_value(v)}" for k, v in item.items()]
        else:
            head.append(f"{toml_key(name)} = {toml_value(value)}")
    return "\n".join(head + tail) + "\n"


EXAMPLE_LINES = (Path(__file__).parent.parent / "kamigate.example.toml").read_text().splitlines()


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    """The documented example config with a few lines deleted, duplicated or given new values."""
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["value", "value", "delete", "duplicate", "garbage"]))
        if action == "value" and "=" in lines[i] and not lines[i].startswith("#"):
            lines[i] = lines[i].split("=", 1)[0] + "= " + toml_value(draw(TOML_VALUE))
        elif action == "delete":
            del lines[i]
        elif action == "duplicate":
            lines.insert(i, lines[i])
        else:
            lines.insert(i, draw(st.text(max_size=30)))
    return "\n".join(lines) + "\n"


def check_outcome(run: Any) -> None:
    try:
        result = run()
    except config.ConfigError as exc:
        assert isinstance(exc.errors, list) and exc.errors, "ConfigError without errors"
        for error in exc.errors:
            assert isinstance(error, str), error
            match = ERROR_FORM.match(error)
            assert match and match["key"].strip(), f"not 'key: message': {error!r}"
        return
    assert isinstance(result, config.Settings)
    result.digest()  # a loaded config can be published to the fleet


@fuzz(400)
@given(text=st.text(max_size=200) | CONFIG_DOCS.map(to_toml) | mutated_example())
@example(text="[review]\nbuyer_patterns = [\"a{2}\"]\n")
def test_fuzz_parse_toml(text: str) -> None:
    check_outcome(lambda: config.parse_toml(text, environ={}))


@fuzz(400)
@given(doc=CONFIG_DOCS | st.dictionaries(st.sampled_from(SECTION_NAMES) | st.text(max_size=6),
                                         MAPPING_DOCS, max_size=6))
def test_fuzz_from_mapping(doc: dict[str, Any]) -> None:
    check_outcome(lambda: config.from_mapping(doc, environ={}))


@pytest.mark.parametrize("pattern", ["a{1001}", "(" * 3000, "x**", r"(a)\1", "(?=ahead)"])
def test_review_pattern_that_re2_cannot_compile_is_a_config_error(pattern: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.from_mapping({"review": {"buyer_patterns": [pattern]}}, environ={})
    assert caught.value.errors[0].startswith("review.buyer_patterns[0]: ")


async def test_put_config_with_an_uncompilable_review_pattern_is_422(engine: Engine) -> None:
    raw = settings_dict(review={"buyer_patterns": ["a{1001}"]})
    resp = await engine.http.put("/admin/config", json=raw, headers=auth(ADMIN_KEY))
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert any(e["field"].startswith("review.buyer_patterns") for e in body["errors"]), body


def test_blank_key_is_named_in_the_error() -> None:
    for text in ('"" = 1\n', '" " = 1\n', '"\\r" = 1\n'):
        with pytest.raises(config.ConfigError) as caught:
            config.parse_toml(text, environ={})
        for error in caught.value.errors:
            match = ERROR_FORM.match(error)
            assert match and match["key"].strip(), error
