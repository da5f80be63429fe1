"""Attacks a hostile storefront, a careless operator or a slow receiver can try, each sent as
it would be; RELIABILITY.md's Security table lists them with their defences.

This file: what the config shows of itself and what a PUT of it does (secrets, key hashes,
URL credentials), and secrets strong enough to sign with."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from engine import config
from engine.config.directory import Directory
from engine.config.redaction import redacted
from engine.http.codec import validation_problem
from engine.http.state import DIRECTORY
from engine.stock.importer import Importer
from engine.stock.reconcile import reconcile
from engine.store import connection, keys
from engine.store.connection import mask_url
from engine.store.fingerprint import FingerprintChanged
from engine.wire import OrderRequest
from tests.conftest import (
    ADMIN_KEY,
    VIEWER_KEY,
    EngineFactory,
    auth,
    codes,
    make_settings,
    settings_dict,
)
from tests.test_signing import _signed

SIGNING = "shop-a-signing-secret-of-32-characters"
HOOK = "shop-a-webhook-secret-of-32-characters"
PAGE = "the-page-secret-of-at-least-32-characters"


def _secret_config(**sections: Any) -> dict[str, Any]:
    raw = settings_dict(server={"page_secret": PAGE}, **sections)
    raw["storefronts"][0] = {**raw["storefronts"][0], "signing_secret": SIGNING,
                             "webhook_secret": HOOK}
    return raw


async def _get_config(engine: Any, key: str = ADMIN_KEY) -> dict[str, Any]:
    resp = await engine.http.get("/admin/config", headers=auth(key))
    assert resp.status == 200
    body: dict[str, Any] = await resp.json()
    return body


# -- 1. a PUT of what GET shows --------------------------------------------------------------------
async def test_putting_back_what_get_shows_keeps_every_secret(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """The usual edit cycle: GET the config, change one field, PUT it back. The "***" in it
    keep the running secrets; none becomes the secret "***" that anyone could sign with."""
    engine = await engine_factory(make_settings(**_secret_config()))
    await engine.import_codes("card-100", codes("SEC", 3))
    shown = (await _get_config(engine))["config"]
    assert shown["storefronts"][0]["signing_secret"] == "***"
    shown["orders"]["default_wait_ms"] = 1500
    resp = await engine.http.put("/admin/config", json=shown, headers=auth(ADMIN_KEY))
    body = await resp.json()
    assert resp.status == 200 and body["changed"] is True, body
    stored = json.loads(await redis.hget(keys.config(), "document"))
    assert stored["storefronts"][0]["signing_secret"] == SIGNING
    assert stored["storefronts"][0]["webhook_secret"] == HOOK
    assert stored["server"]["page_secret"] == PAGE
    assert stored["storefronts"][0]["key_sha256"] == config.sha256_hex("key-shop-a")
    assert "***" not in json.dumps(stored)
    # the attack: sign as shop-a with "***" as the secret
    raw, headers = _signed({"sku": "card-100", "qty": 1, "buyer": "mallory"}, secret="***")
    resp = await engine.http.post("/v1/orders", data=raw, headers=headers)
    assert resp.status == 401
    raw, headers = _signed({"sku": "card-100", "qty": 1, "buyer": "alice"}, secret=SIGNING)
    resp = await engine.http.post("/v1/orders", data=raw, headers=headers)
    assert resp.status == 201, await resp.text()


async def test_a_mask_with_nothing_to_keep_is_refused_naming_the_field(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(make_settings(**_secret_config()), worker=False)
    shown = (await _get_config(engine))["config"]
    before = await redis.hget(keys.config(), "document")
    # a new storefront whose secret is "***": there is no running value to keep
    shown["storefronts"].append({"id": "shop-c", "key_sha256": "***",
                                 "webhook_secret": "***"})
    resp = await engine.http.put("/admin/config", json=shown, headers=auth(ADMIN_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["code"] == "invalid_request", problem
    assert {e["field"] for e in problem["errors"]} == {"storefronts[shop-c].key_sha256",
                                                       "storefronts[shop-c].webhook_secret"}
    assert await redis.hget(keys.config(), "document") == before  # nothing written


@pytest.mark.parametrize(("where", "value"), [
    ("signing_secret", "***"), ("webhook_secret", "***"), ("signing_secret", "short-secret"),
    ("webhook_secret", "x" * 31),
])
def test_secrets_in_a_file_are_real_and_long_enough(where: str, value: str) -> None:
    raw = settings_dict()
    raw["storefronts"][0][where] = value
    with pytest.raises(config.ConfigError) as caught:
        config.from_mapping(raw, environ={})
    assert [e.partition(":")[0] for e in caught.value.errors] == [f"storefronts[0].{where}"]
    raw["storefronts"][0][where] = "y" * 32
    config.from_mapping(raw, environ={})


def test_a_short_page_secret_from_the_environment_is_refused() -> None:
    raw = settings_dict(server={"page_secret": "env:KG_PAGE"})
    with pytest.raises(config.ConfigError) as caught:
        config.from_mapping(raw, environ={"KG_PAGE": "guessable"})
    assert caught.value.errors[0].startswith("server.page_secret: a secret needs at least 32")


# -- 2. what is shown, to every role ---------------------------------------------------------------
async def test_key_hashes_url_credentials_and_alert_urls_are_never_shown(
        engine_factory: EngineFactory, redis_server: Any) -> None:
    url = redis_server.url.replace("redis://", "redis://default:hunter2-redis-pass@")
    raw = _secret_config(surge={"webhook_url": "https://alerts.example.com/hook?token=t0ps3cr3t"})
    settings = make_settings(**raw)
    shown = redacted(settings)
    text = json.dumps(shown)
    for secret in ("t0ps3cr3t", SIGNING, HOOK, PAGE, config.sha256_hex("key-shop-a"),
                   config.sha256_hex(ADMIN_KEY)):
        assert secret not in text, secret
    assert shown["surge"]["webhook_url"] == "***"
    assert {s["key_sha256"] for s in shown["storefronts"]} == {"***"}
    assert {a["key_sha256"] for a in shown["admins"]} == {"***"}
    masked = mask_url(url)
    assert "hunter2" not in masked and masked.startswith("redis://default:***@")
    engine = await engine_factory(settings, worker=False)
    for key in (VIEWER_KEY, ADMIN_KEY):
        text = json.dumps(await _get_config(engine, key))
        assert "t0ps3cr3t" not in text and config.sha256_hex("key-shop-a") not in text
    # the shown sha256 is over the redacted config, not over the secrets
    ready = await (await engine.http.get("/readyz")).json()
    assert ready["checks"]["config"]["sha256"] != settings.digest()


def test_a_redis_url_shown_back_keeps_its_password_only_for_the_same_server() -> None:
    from engine.config.redaction import keep_running

    running = {"redis": {"url": "redis://kg:pa55word-long@db.internal:6379/0"}}
    errors: list[str] = []
    same = keep_running({"redis": {"url": "redis://kg:***@db.internal:6379/0"}}, running, errors)
    assert same["redis"]["url"] == running["redis"]["url"] and errors == []
    other = keep_running({"redis": {"url": "redis://kg:***@evil.example:6379/0"}}, running,
                         errors)
    assert other["redis"]["url"] is None and errors[0].startswith("redis.url:")


async def test_log_lines_and_errors_never_carry_a_redis_password(
        caplog: pytest.LogCaptureFixture) -> None:
    url = "redis://kamigate-door:hunter2-redis-pass@127.0.0.1:1/0"  # nothing listens there
    with caplog.at_level(logging.WARNING), pytest.raises(connection.StoreError) as caught:
        await connection.connect(url, retries=2, delay=0.01)
    assert "hunter2" not in str(caught.value) and "kamigate-door:***@" in str(caught.value)
    assert caplog.records and all("hunter2" not in r.getMessage() for r in caplog.records)


def test_config_diff_shows_neither_secrets_nor_url_passwords() -> None:
    from engine.config.diff import diff

    old = _secret_config(redis={"url": "redis://kg:old-password-1@db:6379/0"})
    new = _secret_config(redis={"url": "redis://kg:new-password-2@db:6379/0"})
    new["storefronts"][0]["webhook_secret"] = "another-webhook-secret-of-32-chars"
    new["admins"][0]["key_sha256"] = config.sha256_hex("a-new-operator-key")
    lines = diff(config.from_mapping(old, environ={}), config.from_mapping(new, environ={}))
    text = "\n".join(lines)
    for secret in ("old-password-1", "new-password-2", "another-webhook", HOOK,
                   config.sha256_hex("a-new-operator-key")):
        assert secret not in text, text
    assert 'redis.url: "redis://kg:***@db:6379/0" → "redis://kg:***@db:6379/0" (changed)' \
        in lines


# -- 5. the buyer's limits hold when the shop is busy ----------------------------------------------
async def test_one_buyer_cannot_fill_the_waiting_line_of_a_busy_shop(
        engine_factory: EngineFactory) -> None:
    """The global bucket is empty (a flash sale): orders wait in line, but one buyer gets no
    more tickets than its own limit allows; the rest are 429."""
    engine = await engine_factory(make_settings(limits={
        "global": {"rate": 0.01, "burst": 1}, "per_buyer": {"rate": 0.01, "burst": 3}}),
        worker=False)
    answers = [await engine.order(buyer="greedy", wait_ms=0) for _ in range(30)]
    statuses = [s for s, _ in answers]
    assert statuses.count(429) == 27, statuses
    assert all(b["code"] == "rate_limited" for s, b in answers if s == 429)
    status, other = await engine.order(buyer="someone-else", wait_ms=0)
    assert status == 202 and other["queue"]["reason"] == "overflow"


# -- 6. inputs that cost the door more than they should --------------------------------------------
def _median_s(fn: Any, times: int = 3) -> float:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        took.append(time.perf_counter() - started)
    return sorted(took)[len(took) // 2]


def test_a_crafted_field_name_costs_what_a_plain_one_does() -> None:
    """msgspec repeats an unknown field's name in its message; reading the field out of that
    message must take time linear in it. A name made of " - at `$" repeated, then a newline
    (56 KB), took 1.4 s of event loop with a regular expression; here it costs about what a
    plain name does."""
    crafted = " - at `$" * 7000 + "\n"
    plain = "x" * len(crafted)
    decode = msgspec.json.Decoder(OrderRequest).decode

    def problem_of(name: str) -> Any:
        try:
            decode(json.dumps({name: 1, "sku": "card-100", "qty": 1, "buyer": "b"}).encode())
        except msgspec.ValidationError as exc:
            return validation_problem(exc)
        raise AssertionError("decoded")

    assert problem_of(crafted).errors[0].field.endswith("…")  # shown cut, not 56 KB
    ratio = _median_s(lambda: problem_of(crafted)) / _median_s(lambda: problem_of(plain))
    assert ratio < 10, ratio
    crafted_config = {"server": {crafted: 1}}
    ratio = _median_s(lambda: _errors_of(crafted_config)) / \
        _median_s(lambda: _errors_of({"server": {plain: 1}}))
    assert ratio < 10, ratio


def _errors_of(raw: dict[str, Any]) -> list[str]:
    try:
        config.from_mapping(raw, environ={})
    except config.ConfigError as exc:
        return exc.errors
    return []


async def test_a_review_pattern_cannot_stall_the_door(engine_factory: EngineFactory) -> None:
    """`([a-z0-9]+\\.?)+@example\\.com` against a 128-character buyer id takes Python's `re`
    seconds (exponential backtracking); review patterns run on RE2, linear in the id."""
    engine = await engine_factory(make_settings(review={
        "buyer_patterns": [r"([a-z0-9]+\.?)+@example\.com"]}), worker=False)
    evil = "a" * 127 + "!"
    status, order = await engine.order(buyer=evil, wait_ms=0)
    assert status == 202 and order["status"] == "pending"  # not a reviewed buyer
    # the match the door makes, timed in CPU seconds (a busy machine cannot fake a stall):
    # Python's `re` needs seconds for this id, RE2 microseconds
    directory = engine.http.app[DIRECTORY].current
    sku = directory.skus["card-100"]
    started = time.process_time()
    for _ in range(100):
        assert directory.review_reason(sku, 1, evil, None) is None
    evil_cpu = (time.process_time() - started) / 100
    assert evil_cpu < 0.005, evil_cpu
    status, reviewed = await engine.order(buyer="vip.buyer@example.com", wait_ms=0)
    assert status == 202 and reviewed["queue"]["reason"] == "review"


def test_patterns_re2_cannot_run_in_linear_time_are_refused() -> None:
    for pattern in (r"(a)\1", r"(?=lookahead)x"):
        errors = _errors_of(settings_dict(review={"buyer_patterns": [pattern]}))
        assert [e.partition(":")[0] for e in errors] == ["review.buyer_patterns[0]"], errors


# -- 7. the import fingerprint cannot change under the codes it recorded ---------------------------
K1 = base64.b64encode(b"1" * 32).decode()


def _codes_section(fingerprint: str | None) -> dict[str, Any]:
    if fingerprint is None:
        return {}
    return {"codes": {"keys": {"k1": K1}, "current": "k1", "fingerprint_key": fingerprint}}


def _doc(fingerprint: str | None) -> dict[str, Any]:
    return settings_dict(redis={"shards": 1}, **_codes_section(fingerprint))


async def _put(engine: Any, doc: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await engine.http.put("/admin/config", json=doc, headers=auth(ADMIN_KEY))
    return resp.status, await resp.json()


async def test_a_new_fingerprint_key_is_refused_once_codes_were_imported(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """Changing `codes.fingerprint_key` (or taking the keys away) would let every code seen
    before be imported again and sold twice: refused on PUT, and an import with a stale
    config is refused too."""
    engine = await engine_factory(config.from_mapping(_doc("fingerprint-key-A-0123456789"),
                                                      environ={}))
    imported = codes("FPA", 5)
    await engine.import_codes("card-100", imported)
    before = await redis.hget(keys.config(), "document")
    for changed in ("fingerprint-key-B-0123456789", None):
        status, problem = await _put(engine, _doc(changed))
        assert status == 422, problem
        assert problem["errors"][0]["field"] == "codes.fingerprint_key"
    assert await redis.hget(keys.config(), "document") == before
    again = await engine.import_codes("card-100", imported)
    assert (again["added"], again["duplicates"]) == (0, 5)
    stale = config.from_mapping(_doc("fingerprint-key-B-0123456789"), environ={})
    intake = Importer(redis, 1, "card-100", "stale", 0, sealer=Directory(stale).sealer)
    await intake.feed(imported)
    with pytest.raises(FingerprintChanged):
        await intake.finish()
    assert (await reconcile(redis, 1, ["card-100"])).ok


async def test_turning_sealing_on_keeps_recognising_codes_seen_before(
        engine_factory: EngineFactory, redis: Redis) -> None:
    engine = await engine_factory(config.from_mapping(_doc(None), environ={}))
    imported = codes("PLAIN", 4)
    await engine.import_codes("card-100", imported)
    status, body = await _put(engine, _doc("fingerprint-key-A-0123456789"))
    assert status == 200 and body["changed"], body
    again = await engine.import_codes("card-100", [*imported, "NEW-SEALED-1"], lot="lot2")
    assert (again["added"], again["duplicates"]) == (1, 4)
    stored = [v.decode() for v in await redis.lrange(keys.lot_codes("card-100", "lot2", 0),
                                                     0, -1)]
    assert stored and all(v.startswith("~k1$") for v in stored)
    # and from now on the keyed fingerprint is the one that stays
    status, problem = await _put(engine, _doc("fingerprint-key-B-0123456789"))
    assert status == 422 and problem["errors"][0]["field"] == "codes.fingerprint_key"
    assert (await reconcile(redis, 1, ["card-100"])).ok


# -- 8. the signed-request path reads its body under the same time limit ---------------------------
async def test_a_trickled_signed_request_is_cut_off_like_any_other(
        engine_factory: EngineFactory) -> None:
    raw = settings_dict(server={"body_timeout_s": 0.5})
    raw["storefronts"][0]["signing_secret"] = SIGNING
    engine = await engine_factory(make_settings(**raw), worker=False)
    body, headers = _signed({"sku": "card-100", "qty": 1, "buyer": "slow"}, secret=SIGNING)
    server = engine.http.server
    reader, writer = await asyncio.open_connection(str(server.host), int(server.port or 0))
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST /v1/orders HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {len(body)}"
                 "\r\n\r\n".encode() + body[:10])  # then nothing more
    await writer.drain()
    started = time.monotonic()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    took = time.monotonic() - started
    writer.close()
    await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:200]
    assert took < 5


# -- 10. the audit trail cannot be erased, notices stay short --------------------------------------
def test_the_audit_keeps_at_least_a_week() -> None:
    errors = _errors_of(settings_dict(audit={"retention_s": 60}))
    assert [e.partition(":")[0] for e in errors] == ["audit.retention_s"], errors
    config.from_mapping(settings_dict(audit={"retention_s": 7 * 86400}), environ={})


async def test_a_change_of_the_retention_is_itself_audited(engine_factory: EngineFactory
                                                           ) -> None:
    engine = await engine_factory(worker=False)
    status, body = await _put(engine, settings_dict(audit={"retention_s": 14 * 86400}))
    assert status == 200 and body["changed"], body
    audit = await (await engine.http.get("/admin/audit", headers=auth(ADMIN_KEY))).json()
    [change] = [e for e in audit["events"] if e["action"] == "config.change"
                and e["details"].get("origin") == "api"]
    assert "audit.retention_s: 2592000 → 1209600" in change["details"]["changes"]
    assert change["who"] == "root"


async def test_a_long_reason_is_refused_where_it_would_reach_every_answer(
        engine_factory: EngineFactory) -> None:
    engine = await engine_factory(worker=False)
    long = "x" * 60_000
    resp = await engine.http.put("/admin/maintenance", json={"mode": "full", "reason": long},
                                 headers=auth(ADMIN_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["errors"][0]["field"] == "reason", problem
    resp = await engine.http.post("/admin/pause", json={"scope": "global", "reason": long},
                                  headers=auth(ADMIN_KEY))
    problem = await resp.json()
    assert resp.status == 422 and problem["errors"][0]["field"] == "reason", problem
    status, order = await engine.order(wait_ms=0)
    assert status == 202 and "Kamigate-Notice" not in order  # nothing was closed or paused
    errors = _errors_of(settings_dict(maintenance={"mode": "off", "reason": long}))
    assert [e.partition(":")[0] for e in errors] == ["maintenance.reason"]


# -- 11. what /metrics shows, and to whom ----------------------------------------------------------
async def test_metrics_can_require_a_token(engine_factory: EngineFactory) -> None:
    token = "metrics-token-of-at-least-32-characters"
    engine = await engine_factory(make_settings(server={"metrics_token": token}), worker=False)
    resp = await engine.http.get("/metrics")
    assert resp.status == 401 and (await resp.json())["code"] == "unauthenticated"
    resp = await engine.http.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    resp = await engine.http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200 and "kamigate_config_info" in await resp.text()
    shown = json.dumps((await _get_config(engine))["config"])
    assert token not in shown
    assert (await engine.http.get("/readyz")).status in (200, 503)  # probes need no token
    errors = _errors_of(settings_dict(server={"metrics_token": "short"}))
    assert [e.partition(":")[0] for e in errors] == ["server.metrics_token"]


# -- found in review: the edges of the same defences -----------------------------------------------
def test_a_path_faked_inside_a_field_name_is_cut_too() -> None:
    decode = msgspec.json.Decoder(OrderRequest).decode
    name = "x` - at `$." + "a" * 50_000
    try:
        decode(json.dumps({name: 1, "sku": "card-100", "qty": 1, "buyer": "b"}).encode())
    except msgspec.ValidationError as exc:
        problem = validation_problem(exc)
    assert len(problem.errors[0].field) <= 201 and len(problem.errors[0].message) <= 201


def test_a_redis_password_in_the_query_is_masked_and_kept() -> None:
    from engine.config.redaction import keep_running

    url = "redis://db.internal:6379/0?password=query-secret-1&db=0"
    assert "query-secret-1" not in mask_url(url)
    shown = redacted(make_settings(redis={"url": url}))
    assert "query-secret-1" not in json.dumps(shown)
    errors: list[str] = []
    kept = keep_running({"redis": {"url": shown["redis"]["url"]}}, {"redis": {"url": url}},
                        errors)
    assert kept["redis"]["url"] == url and errors == []


async def test_an_id_that_is_not_a_string_is_422_not_500(engine_factory: EngineFactory
                                                          ) -> None:
    engine = await engine_factory(worker=False)
    doc = settings_dict()
    doc["storefronts"][0]["id"] = ["shop-a"]
    doc["skus"][0]["id"] = {"x": 1}
    status, problem = await _put(engine, doc)
    assert status == 422, problem


async def test_an_importer_that_started_under_an_older_fingerprint_adds_nothing_after_it(
        engine_factory: EngineFactory, redis: Redis) -> None:
    """An unkeyed import is under way when sealing is turned on and a keyed import adds a
    code: the old import's next chunk is refused in the same atomic call that would add it,
    so the code cannot enter twice (once under each fingerprint)."""
    engine = await engine_factory(config.from_mapping(_doc(None), environ={}))
    stale = Importer(redis, 1, "card-100", "stale", 0)  # plain, as the config was
    await stale.feed(codes("FIRST", 2000))  # one whole chunk: sent, fingerprint taken
    status, _ = await _put(engine, _doc("fingerprint-key-A-0123456789"))
    assert status == 200
    await engine.import_codes("card-100", ["BOTH-1"], lot="sealed")
    await stale.feed(["BOTH-1"])
    with pytest.raises(FingerprintChanged):
        await stale.finish()
    [level] = [s for s in (await (await engine.http.get(
        "/admin/skus", headers=auth(ADMIN_KEY))).json())["skus"] if s["sku"] == "card-100"]
    assert level["imported"] == 2001
    assert (await reconcile(redis, 1, ["card-100"])).ok
