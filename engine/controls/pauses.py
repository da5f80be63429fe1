"""Pauses of automatic delivery: the config's windows (explicit ranges and holiday calendars)
and operators' one-click pause and resume, held in Redis for every process.

What is in force is computed once per refresh (twice a second in the front door, once a second
in the worker) into a dict by scope, so a request looks it up in O(1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import msgspec
from redis.asyncio import Redis

from engine.clock import LATEST
from engine.config.settings import Pause, Settings
from engine.controls.calendars import Window, windows
from engine.store import keys

LOOK_BACK = timedelta(days=62)  # a holiday block that began before today is still in force
LOOK_AHEAD = timedelta(days=400)
MAX_PARKED_MS = 366 * 86400 * 1000


def parked_ttl_ms(ttl_ms: int, ends_ms: int | None, now_ms: int) -> int:
    """How long a ticket parked now may wait: its SKU's ttl beyond the pause's end (a pause
    without an end, or beyond a year: a year)."""
    if ends_ms is None:
        return ttl_ms + MAX_PARKED_MS
    return ttl_ms + min(max(0, ends_ms - now_ms), MAX_PARKED_MS)


class OperatorPause(msgspec.Struct, frozen=True, kw_only=True):
    """POST /admin/pause (or resume, which overrides the config's windows of the scope)."""

    scope: str
    reason: str = ""
    until: str | None = None  # RFC 3339; None: until resumed
    action: Literal["queue", "reject"] = "queue"
    exempt_tiers: tuple[int, ...] = ()
    resumed: bool = False
    by: str = ""
    at_ms: int = 0


@dataclass(frozen=True, slots=True)
class InForce:
    """A pause in force now for a scope."""

    scope: str
    reason: str
    ends_at: datetime | None  # None: until an operator resumes it
    action: str
    source: str
    holiday: str | None = None
    exempt_tiers: tuple[int, ...] = ()

    def ends_ms(self) -> int | None:
        return None if self.ends_at is None else int(self.ends_at.timestamp() * 1000)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"scope": self.scope, "reason": self.reason, "action": self.action,
                               "until": None if self.ends_at is None
                               else self.ends_at.isoformat(), "source": self.source}
        if self.holiday:
            out["holiday"] = self.holiday
        if self.exempt_tiers:
            out["exempt_tiers"] = list(self.exempt_tiers)
        return out

    def notice(self) -> str:
        until = "until an operator resumes it" if self.ends_at is None else \
            f"until {self.ends_at.isoformat()}"
        return f"delivery is paused ({self.reason or self.holiday or 'paused'}) {until}"


@dataclass(frozen=True, slots=True)
class Ahead:
    """A pause of the config that starts within its `notice_lead_s`: announced ahead."""

    window: Window
    action: str
    exempt_tiers: tuple[int, ...]

    @property
    def scope(self) -> str:
        return self.window.scope

    def notice(self) -> str:
        w = self.window
        until = "" if w.ends_at == LATEST else f" until {w.ends_at.isoformat()}"
        return (f"delivery will pause ({w.reason or w.holiday or 'paused'}) from "
                f"{w.starts_at.isoformat()}{until}")

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.window.to_json().items() if k != "source"}
        out["action"] = self.action
        if self.exempt_tiers:
            out["exempt_tiers"] = list(self.exempt_tiers)
        return out


def _until(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class PauseBoard:
    """The pauses of one config plus the operators', refreshed as a whole."""

    def __init__(self) -> None:
        self.in_force: dict[str, InForce] = {}
        self.operators: dict[str, OperatorPause] = {}
        self._settings: Settings | None = None
        self._windows: list[Window] = []
        self.ahead: dict[str, Ahead] = {}  # scope -> the next pause announced for it
        self.config_in_force: list[Window] = []  # the config's and calendars' windows now
        self._computed_on = ""
        self._pause: dict[int, Pause] = {}  # id(window) -> its [[pauses]] entry

    def config_windows(self, settings: Settings, now: datetime) -> list[Window]:
        """The config's windows around now (recomputed per config and per day)."""
        day = now.date().isoformat()
        if settings is not self._settings or day != self._computed_on:
            found: list[Window] = []
            self._pause = {}
            for pause in settings.pauses:
                for w in windows([pause], settings.calendars, now - LOOK_BACK,
                                 now + LOOK_AHEAD):
                    found.append(w)
                    self._pause[id(w)] = pause
            found.sort(key=lambda w: (w.starts_at, w.ends_at, w.scope))
            self._windows = found
            self._settings, self._computed_on = settings, day
        return self._windows

    def pause_of(self, window: Window) -> Pause:
        """The [[pauses]] entry a window of `config_windows` comes from."""
        return self._pause[id(window)]

    def refresh(self, settings: Settings, operators: dict[str, OperatorPause],
                now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        found: dict[str, InForce] = {}
        ahead: dict[str, Ahead] = {}
        in_force: list[Window] = []
        for w in self.config_windows(settings, now):
            pause = self._pause[id(w)]
            if w.starts_at > now:
                if w.starts_at - timedelta(seconds=pause.notice_lead_s) <= now and (
                        w.scope not in ahead or w.starts_at < ahead[w.scope].window.starts_at):
                    ahead[w.scope] = Ahead(w, pause.action, pause.exempt_tiers)
                continue
            if now >= w.ends_at:
                continue
            override = operators.get(w.scope)
            if override is not None and override.resumed and (
                    (_until(override.until) or LATEST) > now):
                continue
            in_force.append(w)
            reason = w.reason or w.holiday or ""
            _keep_longest(found, InForce(w.scope, reason, None if w.ends_at == LATEST
                                         else w.ends_at, pause.action, w.source, w.holiday,
                                         pause.exempt_tiers))
        live = {}
        for scope, op in operators.items():
            until = _until(op.until)
            if until is not None and until <= now:
                continue  # ran out by itself
            live[scope] = op
            if not op.resumed:
                _keep_longest(found, InForce(op.scope, op.reason, until, op.action,
                                             f"operator:{op.by or '-'}",
                                             exempt_tiers=op.exempt_tiers))
        self.in_force, self.operators = found, live
        self.ahead, self.config_in_force = ahead, in_force

    def lookup(self, storefront: str, sku: str, tier: int | None = None) -> InForce | None:
        """The pause in force for an order of this storefront and SKU (the longest one); with
        `tier`, only a pause that does not exempt that tier."""
        if not self.in_force:
            return None
        return _pick(self.in_force, storefront, sku, tier, _later)

    def coming(self, storefront: str, sku: str, tier: int | None = None) -> Ahead | None:
        """The next pause announced for an order of this storefront and SKU (the earliest)."""
        if not self.ahead:
            return None
        return _pick(self.ahead, storefront, sku, tier,
                     lambda a, b: a.window.starts_at < b.window.starts_at)


P = TypeVar("P", InForce, Ahead)


def _pick(table: dict[str, P], storefront: str, sku: str, tier: int | None,
          better: Callable[[P, P], bool]) -> P | None:
    """Of the scopes an order falls in, the entry that does not exempt its tier and is
    `better` than the others."""
    best: P | None = None
    for scope in (f"sku:{sku}", f"storefront:{storefront}", "global"):
        found = table.get(scope)
        if found is None or (tier is not None and tier in found.exempt_tiers):
            continue
        if best is None or better(found, best):
            best = found
    return best


def _later(a: InForce, b: InForce) -> bool:
    return b.ends_at is not None and (a.ends_at is None or a.ends_at > b.ends_at)


def _keep_longest(found: dict[str, InForce], candidate: InForce) -> None:
    current = found.get(candidate.scope)
    if current is None or _later(candidate, current):
        found[candidate.scope] = candidate


_decode = msgspec.json.Decoder(OperatorPause).decode


async def load(redis: Redis) -> dict[str, OperatorPause]:
    raw: Any = await redis.hgetall(keys.pauses())
    out = {}
    for scope, value in raw.items():
        try:
            out[scope.decode()] = _decode(value)
        except msgspec.DecodeError:
            continue  # written by a newer version: not ours to judge
    return out


async def pause(redis: Redis, scope: str, reason: str, until: str | None,
                action: Literal["queue", "reject"], by: str,
                exempt_tiers: tuple[int, ...] = ()) -> OperatorPause:
    entry = OperatorPause(scope=scope, reason=reason, until=until, action=action, by=by,
                          at_ms=int(time.time() * 1000), exempt_tiers=exempt_tiers)
    await redis.hset(keys.pauses(), scope, msgspec.json.encode(entry))
    return entry


async def resume(redis: Redis, board: PauseBoard, settings: Settings, scope: str,
                 by: str, now: datetime | None = None) -> OperatorPause | None:
    """End the operator's pause of the scope; a config or holiday window in force for it is
    overridden until its end. None when nothing was paused (by `now`, default the clock's)."""
    now = now or datetime.now(UTC)
    active = [w for w in board.config_windows(settings, now)
              if w.scope == scope and w.starts_at <= now < w.ends_at]
    current = (await load(redis)).get(scope)
    had = current is not None and not current.resumed and (
        (_until(current.until) or LATEST) > now)
    await redis.hdel(keys.pauses(), scope)
    if not active:
        return None if not had else OperatorPause(scope=scope, resumed=True, by=by)
    ends = max(w.ends_at for w in active)
    entry = OperatorPause(scope=scope, resumed=True, by=by, at_ms=int(time.time() * 1000),
                          until=None if ends == LATEST else ends.isoformat())
    await redis.hset(keys.pauses(), scope, msgspec.json.encode(entry))
    return entry


def listing(board: PauseBoard, settings: Settings, now: datetime) -> dict[str, Any]:
    """GET /admin/pauses: in force now, and scheduled (config and calendar windows ahead)."""
    scheduled = []
    for w in board.config_windows(settings, now):
        if w.starts_at > now:
            pause = board.pause_of(w)
            announced = w.starts_at - timedelta(seconds=pause.notice_lead_s)
            scheduled.append({**w.to_json(), "action": pause.action,
                              "exempt_tiers": list(pause.exempt_tiers),
                              "announced_at": announced.isoformat()})
    return {"active": [p.to_json() for p in board.in_force.values()],
            "scheduled": scheduled,
            "operators": [json.loads(msgspec.json.encode(p)) for p in board.operators.values()]}
