"""Attacks a hostile storefront, a careless operator or a slow receiver can try, each sent as
it would be; RELIABILITY.md's Security table lists them with their defences.

This file: what the config shows of itself and what a PUT of it does (secrets, key hashes,
URL credentials), and secrets strong enough to sign with."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from redis.asyncio import Redis

from engine import config
from engine.config.redaction import redacted
from engine.store import connection, keys
from engine.store.connection import mask_url
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


# -- 1. a PUT of what GET shows ----------------------------------------------------------------
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


# -- 2. what is shown, to every role -----------------------------------------------------------
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
