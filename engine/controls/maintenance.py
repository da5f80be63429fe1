"""Maintenance: `off`, `read_only` (order writes answer 503, reads work) or `full` (everything
but health, metrics, /status, the buyers' waiting pages and the maintenance switch itself
answers 503). With `action = "queue"` new orders are not refused: they wait as tickets
(reason "maintenance") in the parked lines and are served in line order when it ends.

The mode in force is the one an operator set (PUT /admin/maintenance or `kamigate
maintenance`, kept in Redis so every front door follows it within a second), else the
config's [maintenance]. A window with `starts_at` in the future is announced: answers carry a
notice from `notice_lead_s` before it starts. Orders already admitted are never dropped: the
workers keep claiming while the door is closed. A window may be scoped to one storefront or
SKU: it closes order writes of that scope only.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from redis.asyncio import Redis

from engine.clock import parse_rfc3339
from engine.config.settings import Maintenance
from engine.store import keys
from engine.wire import MAX_REASON, Reason

MODES = ("off", "read_only", "full")
ACTIONS = ("reject", "queue")
RETRY_AFTER_S = 60


class MaintenanceState(msgspec.Struct, kw_only=True, omit_defaults=True,
                       forbid_unknown_fields=True):
    """What the door enforces; also the body of PUT /admin/maintenance."""

    mode: str = "off"
    reason: Reason = ""
    eta: str | None = None
    starts_at: str | None = None
    scope: str = "global"  # or "storefront:<id>", "sku:<id>": closes that scope's orders
    action: str = "reject"  # "queue": new orders wait as tickets (reason "maintenance")

    def queues(self, now: int) -> bool:
        """In force at `now` and turning new orders into tickets."""
        return self.action == "queue" and self.active(now) != "off"

    def ends_ms(self) -> int | None:
        """When it is expected to end (its eta), if known."""
        return parse_rfc3339(self.eta) if self.eta else None

    def active(self, now: int) -> str:
        """The mode in force at `now` (a scheduled window is off until it starts)."""
        if self.mode == "off":
            return "off"
        if self.starts_at and parse_rfc3339(self.starts_at) > now:
            return "off"
        return self.mode

    def notice(self, now: int, lead_s: float) -> str | None:
        """Human text for answers: the window in force, or one starting within lead_s."""
        if self.mode == "off":
            return None
        reason = f": {self.reason}" if self.reason else ""
        until = f" until {self.eta}" if self.eta else ""
        if self.active(now) != "off":
            return f"maintenance ({self.mode}){reason}{until}"
        assert self.starts_at is not None
        if parse_rfc3339(self.starts_at) - now <= lead_s * 1000:
            return f"maintenance ({self.mode}) from {self.starts_at}{reason}{until}"
        return None

    def retry_after(self, now: int) -> int:
        if self.eta:
            return max(1, (parse_rfc3339(self.eta) - now) // 1000)
        return RETRY_AFTER_S


class Waiting(NamedTuple):
    """A maintenance window a ticket waits behind, as the Order view asks of it."""

    state: MaintenanceState
    now: int

    def ends_ms(self) -> int | None:
        return self.state.ends_ms()

    def notice(self) -> str:
        return self.state.notice(self.now, 0) or "maintenance"


def from_config(section: Maintenance) -> MaintenanceState:
    return MaintenanceState(mode=section.mode, reason=section.reason, eta=section.eta,
                            starts_at=section.starts_at, action=section.action)


def check(state: MaintenanceState) -> list[str]:
    """Problems with a requested state, each naming its field."""
    errors = []
    if state.mode not in MODES:
        errors.append(f"mode: must be one of {', '.join(MODES)}")
    if state.action not in ACTIONS:
        errors.append(f"action: must be one of {', '.join(ACTIONS)}")
    if len(state.reason) > MAX_REASON:
        errors.append(f"reason: at most {MAX_REASON} characters (it is sent with every answer)")
    kind, _, name = state.scope.partition(":")
    if state.scope != "global" and not (kind in ("storefront", "sku") and name):
        errors.append("scope: must be 'global', 'storefront:<id>' or 'sku:<id>'")
    for field in ("eta", "starts_at"):
        value = getattr(state, field)
        if value is not None:
            try:
                parse_rfc3339(value)
            except ValueError:
                errors.append(f"{field}: must be an RFC 3339 timestamp with a time zone")
    return errors


_decode = msgspec.json.Decoder(MaintenanceState).decode


async def load(redis: Redis, section: Maintenance) -> MaintenanceState:
    """The operator's setting if there is one, else the config's."""
    raw = await redis.get(keys.maintenance())
    return _decode(raw) if raw else from_config(section)


async def store(redis: Redis, state: MaintenanceState) -> None:
    if state.scope == "global":
        await redis.set(keys.maintenance(), msgspec.json.encode(state))
    elif state.mode == "off":
        await redis.hdel(keys.maintenance_scoped(), state.scope)
    else:
        await redis.hset(keys.maintenance_scoped(), state.scope, msgspec.json.encode(state))


async def load_scoped(redis: Redis) -> dict[str, MaintenanceState]:
    """Maintenance of single storefronts or SKUs, by scope."""
    raw: Any = await redis.hgetall(keys.maintenance_scoped())
    return {k.decode(): _decode(v) for k, v in raw.items()}


def closing(scoped: dict[str, MaintenanceState], storefront: str, sku: str,
            now: int) -> MaintenanceState | None:
    """The scoped maintenance in force for an order of this storefront and SKU (a scoped
    window, read_only or full alike, closes the scope's order writes)."""
    for scope in (f"sku:{sku}", f"storefront:{storefront}"):
        state = scoped.get(scope)
        if state is not None and state.active(now) != "off":
            return state
    return None


def announced(scoped: dict[str, MaintenanceState], storefront: str, sku: str, now: int,
              lead_s: float) -> str | None:
    """The notice of a scoped window of this storefront or SKU starting within lead_s."""
    for scope in (f"sku:{sku}", f"storefront:{storefront}"):
        state = scoped.get(scope)
        if state is not None and state.active(now) == "off":
            notice = state.notice(now, lead_s)
            if notice:
                return f"{notice} ({scope})"
    return None


def holds(state: MaintenanceState, scoped: dict[str, MaintenanceState], storefront: str,
          sku: str, now: int) -> MaintenanceState | None:
    """The window in force now that queues this storefront's orders for this SKU, if any
    (the global one first): its tickets wait until it ends."""
    if state.queues(now):
        return state
    closed = closing(scoped, storefront, sku, now)
    return closed if closed is not None and closed.queues(now) else None

