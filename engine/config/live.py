"""The fleet's running config in Redis: publish a validated document, adopt it at start, and
follow it (pub/sub for speed, the stored version for an instance that missed a message).

Every process validates a document itself before it applies it; a document it cannot use is
logged and the running config stays. Keys that shape the running processes (Redis, shards,
listening address) cannot change live: such a change is refused with a message saying a
restart is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.config.loading import ConfigError, from_mapping
from engine.config.redaction import public_sha256
from engine.config.settings import Settings
from engine.store import audit, fingerprint, keys, scripts
from engine.store.sealing import sealer_of

log = logging.getLogger("kamigate.config")
POLL_S = 0.25
MAX_AUDITED_CHANGES = 100

# (section, field): changing these rebuilds connections, listeners or key layouts.
RESTART_KEYS = (
    ("redis", "url"), ("redis", "shards"), ("redis", "data_dir"), ("redis", "appendfsync"),
    ("server", "host"), ("server", "port"), ("server", "max_body_bytes"),
    ("server", "backlog"),
)


@dataclass(frozen=True, slots=True)
class Running:
    """One version of the fleet's config, validated by this process."""

    version: int
    sha256: str
    settings: Settings
    document: Mapping[str, Any]
    origin: str = "file"
    by: str = ""
    at_ms: int = 0


def parse_body(body: bytes, content_type: str) -> tuple[dict[str, Any], Settings]:
    """A config document from TOML or JSON, and its settings; ConfigError."""
    raw = parse_document(body, content_type)
    return raw, from_mapping(raw)


def parse_document(body: bytes, content_type: str) -> dict[str, Any]:
    """A config document from TOML or JSON (by content type; TOML unless it says json),
    not yet checked."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(["(body): not UTF-8 text"]) from None
    raw: dict[str, Any]
    if "json" in content_type:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ConfigError([f"(json): {exc}"]) from None
        if not isinstance(raw, dict):
            raise ConfigError(["(json): the config must be an object"])
    else:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"(toml): {exc}"]) from None
    return raw


def read_file(path: str) -> tuple[dict[str, Any], Settings, str]:
    """(document, settings, sha256 of the file's bytes) of a config file; ConfigError."""
    try:
        with open(path, "rb") as f:
            body = f.read()
    except OSError as exc:
        raise ConfigError([f"(file): cannot read {path}: {exc}"]) from None
    raw, settings = parse_body(body, "application/toml")
    return raw, settings, hashlib.sha256(body).hexdigest()


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """The keys whose change needs a restart, each as `key: message`."""
    problems = []
    for section, field in RESTART_KEYS:
        before = getattr(getattr(old, section), field)
        after = getattr(getattr(new, section), field)
        if before != after:
            problems.append(f"{section}.{field}: cannot change on a running fleet (running "
                            f"{before!r}, new {after!r}); restart kamigate to change it")
    return problems


async def publish(redis: Redis, document: Mapping[str, Any], settings: Settings, origin: str,
                  by: str, file_sha256: str = "", changes: Sequence[str] = ()
                  ) -> tuple[int, bool]:
    """Make a validated document the fleet's config; (version, whether it changed). A change
    is audited: who, how, the sha256 before and after, and `changes` (what changed, by key,
    secrets as ***: `kamigate config diff`'s lines)."""
    sealer = sealer_of(settings.codes.keys, settings.codes.current,
                       settings.codes.fingerprint_key)
    recorded = await fingerprint.recorded(redis)
    why = fingerprint.change_refused(recorded, sealer)
    if why is not None:
        raise ConfigError([f"codes.fingerprint_key: {why}"])
    if recorded is None and await redis.scard(keys.skus_known()):
        # codes from before the store kept a record: they were imported under this config's
        # fingerprint (the one running them), which may not change from now on
        await fingerprint.record(redis, sealer)
    shown = public_sha256(settings)
    version, changed, before = await scripts.CONFIG(
        redis, [keys.config()],
        [settings.digest(), msgspec.json.encode(document), origin, by,
         int(time.time() * 1000), file_sha256, keys.config_channel(), shown],
    )
    if changed:
        details: dict[str, Any] = {"origin": origin, "version": int(version)}
        if changes:
            details["changes"] = list(changes[:MAX_AUDITED_CHANGES])
        await audit.record(redis, by or origin, "config.change", details,
                           before=(before or b"").decode() or None, after=shown)
        log.info("config version %s published (%s by %s, sha256 %s)", version, origin,
                 by or "-", shown[:12])
    return int(version), bool(changed)


async def read(redis: Redis) -> Running | None:
    """The fleet's config as stored; None when none is; ConfigError when it does not validate
    here (e.g. an `env:` secret this process's environment lacks)."""
    raw: Any = await redis.hgetall(keys.config())
    if not raw or b"document" not in raw:
        return None
    document = json.loads(raw[b"document"])
    return Running(int(raw[b"version"]), raw[b"sha256"].decode(), from_mapping(document),
                   document, raw.get(b"origin", b"").decode(), raw.get(b"by", b"").decode(),
                   int(raw.get(b"at", b"0")))


async def boot(redis: Redis, path: str | None, settings: Settings) -> Running:
    """The config this process starts with. A config file that changed since it was last
    applied wins (a restart with a new file); otherwise the fleet's stored config, so live
    changes survive restarts."""
    document: Mapping[str, Any] = msgspec.to_builtins(settings)
    file_sha = ""
    if path is not None:
        document, settings, file_sha = read_file(path)
    stored: Any = await redis.hget(keys.config(), "file_sha256")
    refused: ConfigError | None = None
    if stored is None or stored.decode() != file_sha or path is None:
        try:
            await publish(redis, document, settings, "boot", "", file_sha)
        except ConfigError as exc:  # it would break a promise: the fleet's config stays
            log.error("%s not applied: %s", path or "the given settings", "; ".join(exc.errors))
            refused = exc
    try:
        running = await read(redis)
    except ConfigError as exc:
        log.error("the fleet's stored config does not validate here (%s); using %s",
                  "; ".join(exc.errors), path or "the given settings")
        running = None
    if running is None or restart_needed(settings, running.settings):
        if refused is not None:
            raise refused
        return Running(0, public_sha256(settings), settings, document)
    return running


async def page_secret(redis: Redis) -> str:
    """The fleet's random secret for buyer-page links when the config sets none: made once,
    kept in Redis, the same for every process and every config version."""
    await redis.set(keys.page_secret(), secrets.token_hex(32), nx=True)
    found: Any = await redis.get(keys.page_secret())
    return str(found.decode())


class Follower:
    """Applies every new version of the fleet's config to this process, within POLL_S of its
    publication (pub/sub), or of the next poll if the message was missed."""

    def __init__(self, redis: Redis, running: Running,
                 apply: Callable[[Running], None]) -> None:
        self.redis = redis
        self.running = running
        self._apply = apply
        self.refused_version = 0

    def adopt(self, running: Running) -> None:
        """Apply a version (one this process published, or one the follower read)."""
        if running.version and running.version <= self.running.version:
            return
        problems = restart_needed(self.running.settings, running.settings)
        if problems:
            if running.version != self.refused_version:
                log.error("config version %s not applied: %s", running.version,
                          "; ".join(problems))
            self.refused_version = running.version
            return
        self.running = running
        self._apply(running)
        log.info("config version %s applied (sha256 %s)", running.version, running.sha256[:12])

    async def check(self) -> None:
        version: Any = await self.redis.hget(keys.config(), "version")
        if version is None or int(version) <= max(self.running.version, self.refused_version):
            return
        try:
            running = await read(self.redis)
        except ConfigError as exc:
            log.error("config version %s does not validate here; keeping version %s: %s",
                      int(version), self.running.version, "; ".join(exc.errors))
            self.refused_version = int(version)
            return
        except (ValueError, KeyError) as exc:  # not a document at all (garbled, hand-written)
            log.error("config version %s is unreadable (%s); keeping version %s",
                      int(version), type(exc).__name__, self.running.version)
            self.refused_version = int(version)
            return
        if running is not None:
            self.adopt(running)

    async def run(self) -> None:
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.config_channel())
                while True:
                    await pubsub.get_message(timeout=POLL_S)
                    await self.check()
            except (RedisError, OSError) as exc:
                log.warning("config follower lost Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(POLL_S)
            except Exception:  # e.g. an unreadable stored document: stay loud, keep following
                log.exception("config follower failed; retrying")
                await asyncio.sleep(POLL_S)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed from redis 8
