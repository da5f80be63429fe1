"""A scheduled pause is announced from its `notice_lead_s`: the Order's notice and the
Kamigate-Notice header for orders of its scope, the buyer page, /status, and one
`pause.scheduled` event to the storefronts concerned; the config's and calendars' pauses
starting and ending are audited once for the fleet."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from engine.clock import now_ms
from engine.controls.calendars import windows
from engine.controls.pauses import PauseBoard
from tests.conftest import (
    OPERATOR_KEY,
    SHOP_A_KEY,
    Engine,
    EngineFactory,
    auth,
    codes,
    eventually,
    make_settings,
    settings_dict,
)
from tests.event_receiver import SECRET, EventReceiver
from tests.test_pages import get_state, token_of

STOCKTAKE = "monthly stocktake"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _ahead(scope: str = "sku:card-100", in_hours: float = 2, lead_s: float = 3 * 3600,
           **extra: Any) -> dict[str, Any]:
    starts = datetime.now(UTC) + timedelta(hours=in_hours)
    return {"scope": scope, "reason": STOCKTAKE, "starts_at": _rfc3339(starts),
            "ends_at": _rfc3339(starts + timedelta(hours=1)), "notice_lead_s": lead_s, **extra}


def test_the_board_announces_a_pause_within_its_lead_only() -> None:
    settings = make_settings(pauses=[_ahead(exempt_tiers=[9]),
                                     _ahead("storefront:shop-b", in_hours=5)])
    board = PauseBoard()
    board.refresh(settings, {}, datetime.now(UTC))
    coming = board.coming("shop-a", "card-100")
    assert coming is not None and STOCKTAKE in coming.notice()
    assert coming.notice().startswith("delivery will pause (monthly stocktake) from ")
    assert board.coming("shop-a", "card-100", tier=9) is None  # exempt: nothing to announce
    assert board.coming("shop-a", "card-limited") is None
    assert board.coming("shop-b", "card-limited") is None  # 5 h ahead, 3 h lead: not yet
    board.refresh(settings, {}, datetime.now(UTC) + timedelta(hours=2, minutes=30))
    assert board.coming("shop-b", "card-limited") is not None
    assert board.coming("shop-a", "card-100") is None  # in force now, no longer ahead
    assert board.lookup("shop-a", "card-100") is not None


async def test_orders_of_the_scope_carry_the_announcement(engine_factory: EngineFactory
                                                          ) -> None:
    engine = await engine_factory(make_settings(pauses=[_ahead()]))
    await engine.import_codes("card-100", codes("AN", 3))
    await engine.import_codes("card-limited", codes("AL", 3))

    async def announced() -> bool:
        resp = await engine.http.get("/status", headers={"Accept": "application/json"})
        return bool((await resp.json())["pauses_ahead"])

    await eventually(announced, timeout=3)
    resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
        "sku": "card-100", "qty": 1, "buyer": "an1"})
    body = await resp.json()
    assert resp.status == 201 and body["status"] == "fulfilled"
    assert STOCKTAKE in body["notice"] and "will pause" in body["notice"]
    assert STOCKTAKE in unquote(resp.headers["Kamigate-Notice"])
    got = await engine.http.get(f"/v1/orders/{body['order_id']}", headers=auth(SHOP_A_KEY))
    assert STOCKTAKE in (await got.json())["notice"]
    assert STOCKTAKE in unquote(got.headers["Kamigate-Notice"])
    # another SKU is not concerned
    resp = await engine.http.post("/v1/orders", headers=auth(SHOP_A_KEY), json={
        "sku": "card-limited", "qty": 1, "buyer": "an2"})
    other = await resp.json()
    assert "notice" not in other or other["notice"] is None
    assert "Kamigate-Notice" not in resp.headers
    # the buyer's page says it too
    page = f"/q/{body['order_id']}?t={token_of(engine, body['order_id'])}"
    status, state = await get_state(engine, page)
    assert status == 200 and STOCKTAKE in state["notice"]
    # /status, as JSON and as HTML
    resp = await engine.http.get("/status", headers={"Accept": "application/json"})
    [ahead] = (await resp.json())["pauses_ahead"]
    assert ahead["scope"] == "sku:card-100" and ahead["reason"] == STOCKTAKE
    html = await (await engine.http.get("/status")).text()
    assert "Delivery will pause" in html and STOCKTAKE in html


async def test_a_global_pause_ahead_is_on_every_answer(engine_factory: EngineFactory) -> None:
    engine = await engine_factory(make_settings(pauses=[_ahead("global")]))

    async def announced() -> bool:
        resp = await engine.http.get("/healthz")
        return STOCKTAKE in unquote(resp.headers.get("Kamigate-Notice", ""))

    await eventually(announced, timeout=3)
    resp = await engine.http.get("/admin/skus", headers=auth(OPERATOR_KEY))
    assert STOCKTAKE in unquote(resp.headers["Kamigate-Notice"])


async def test_pause_scheduled_is_told_once_to_the_storefronts_concerned(
    engine_factory: EngineFactory, receiver: tuple[EventReceiver, str],
) -> None:
    events, url = receiver
    raw = settings_dict(webhooks={"first_retry_s": 0.05, "max_retry_s": 0.2,
                                  "allow_private": True},
                        pauses=[_ahead(exempt_tiers=[8, 9]), _ahead("storefront:shop-b")])
    raw["storefronts"][0].update(events_url=url, webhook_secret=SECRET)
    engine = await engine_factory(make_settings(**raw))
    await eventually(lambda: len(events.of("pause.scheduled")) >= 1, timeout=10)
    await asyncio.sleep(1.2)  # more rounds of the watch (twice a second): told once only
    [told] = events.of("pause.scheduled")  # shop-b's own pause is not shop-a's business
    assert told["storefront"] == "shop-a" and told["scope"] == "sku:card-100"
    assert told["reason"] == STOCKTAKE and told["exempt_tiers"] == [8, 9]
    assert told["action"] == "queue" and told["starts_at"] < told["ends_at"]
    assert STOCKTAKE in told["notice"]
    actions = await _worker_audit(engine)
    assert actions.count("pause.scheduled") == 2  # both pauses, each once


async def _worker_audit(engine: Engine) -> list[str]:
    resp = await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))
    return [e["action"] for e in (await resp.json())["events"] if e.get("who") == "worker"]


async def test_a_calendar_pause_starting_and_ending_is_audited_once(
    engine_factory: EngineFactory,
) -> None:
    raw = {"calendars": {"CN": {"country": "CN", "timezone": "Asia/Shanghai"}},
           "pauses": [{"scope": "sku:card-100", "calendar": "CN", "notice_lead_s": 86400}]}
    settings = make_settings(**raw)
    now = datetime.now(UTC)
    block = next(w for w in windows(settings.pauses, settings.calendars, now,
                                    now + timedelta(days=200)) if w.starts_at > now)
    engine = await engine_factory(settings, worker=False)
    worker = engine.stepped_worker()
    await worker.maintain_leases(force=True)
    starts = int(block.starts_at.timestamp() * 1000)
    ends = int(block.ends_at.timestamp() * 1000)
    for at in (starts - 3_600_000, starts - 1_800_000, starts + 1, starts + 60_000,
               ends + 1, ends + 60_000):
        await worker.chores(at_ms=at)
    actions = await _worker_audit(engine)
    assert sorted(a for a in actions if a.startswith("pause.")) == [
        "pause.ended", "pause.scheduled", "pause.started"], actions
    resp = await engine.http.get("/admin/audit", headers=auth(OPERATOR_KEY))
    [started] = [e for e in (await resp.json())["events"] if e["action"] == "pause.started"]
    assert started["details"]["scope"] == "sku:card-100"
    assert started["details"]["holiday"] and started["details"]["source"] == "calendar:CN"
    assert now_ms() < starts  # the clock was driven: nothing waited for the holiday
