"""Buyer pages: the signed waiting page, its polled state, /status; and the page in Chromium."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from engine.http import pages
from engine.http.state import DIRECTORY
from engine.wire import Order, QueueInfo
from tests.conftest import SHOP_A_KEY, Engine, auth, eventually

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
STATE_KEYS = {"status", "position", "eta_s", "expires_at", "notice", "reason", "text"}


async def queued(engine: Engine) -> tuple[str, str]:
    """A queued order (no stock): its id and its page path (the link less its origin)."""
    status, body = await engine.order(wait_ms=5000)
    assert status == 202 and body["status"] == "queued", body
    link = urlsplit(body["queue"]["page"])
    return body["order_id"], f"{link.path}?{link.query}"


def token_of(engine: Engine, order_id: str) -> str:
    assert engine.client is not None
    return engine.client.app[DIRECTORY].current.page_token(order_id)


async def get_state(engine: Engine, page: str) -> tuple[int, dict[str, Any]]:
    path, _, query = page.partition("?")
    resp = await engine.http.get(f"{path}/state?{query}")
    return resp.status, await resp.json(content_type=None)


async def wait_for_status(engine: Engine, page: str, wanted: str) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        status, body = await get_state(engine, page)
        assert status == 200
        found.update(body)
        return bool(body["status"] == wanted)

    await eventually(reached, timeout=5, every=0.02, what=f"the page to say {wanted}")
    return found


def assert_csp(headers: Any) -> None:
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "unsafe" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"


# --- the waiting page over HTTP ------------------------------------------------------------

async def test_page_with_its_token_shows_the_position(engine: Engine) -> None:
    order_id, page = await queued(engine)
    resp = await engine.http.get(page)
    text = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert_csp(resp.headers)
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    assert order_id in text and "You are number 1 in line" in text
    assert re.search(r'id="position">1<', text)
    # no external resource: every src and href stays on this origin
    for ref in re.findall(r'(?:src|href)="([^"]*)"', text):
        assert ref.startswith("/"), ref


async def test_wrong_missing_or_foreign_links_all_get_the_same_page(engine: Engine) -> None:
    order_id, page = await queued(engine)
    unknown = "o_0000ffffffffffffffff"
    paths = [
        f"/q/{order_id}",                                     # no token
        f"/q/{order_id}?t=",                                  # empty token
        f"/q/{order_id}?t={'0' * 24}",                        # wrong token
        f"/q/{order_id}?t={token_of(engine, order_id)[:-1]}",  # truncated token
        f"/q/{order_id}?t=%E4%B8%AD",                         # non-ASCII token
        f"/q/{unknown}?t={token_of(engine, unknown)}",        # right token, no such order
        f"/q/{unknown}?t={page.partition('t=')[2]}",          # another order's token
        "/q/..%2F..%2Fetc?t=x", "/q/%3Cscript%3E?t=x", f"/q/{'o_' + 'f' * 500}?t=x",
    ]
    bodies = set()
    for path in paths:
        resp = await engine.http.get(path)
        body = await resp.text()
        assert resp.status == 404 and resp.content_type == "text/html", path
        assert_csp(resp.headers)
        assert "Link not valid" in body and order_id not in body and "<script" not in body
        bodies.add(body)
    assert len(bodies) == 1  # nothing tells an unknown order from a wrong token


async def test_state_answers_the_page_fields_and_never_codes(engine: Engine) -> None:
    order_id, page = await queued(engine)
    status, body = await get_state(engine, page)
    assert status == 200 and set(body) == STATE_KEYS
    assert body["status"] == "queued" and body["position"] == 1
    assert body["reason"] == "sold_out" and body["expires_at"].endswith("Z")
    assert body["text"]["position"] == "1" and body["text"]["headline"].endswith("1 in line")
    await engine.import_codes("card-100", ["SECRET-CODE-1"])
    done = await wait_for_status(engine, page, "fulfilled")
    assert set(done) == STATE_KEYS and done["position"] is None
    assert done["text"]["headline"] == "Your order is complete"
    assert done["text"]["detail"] == "The shop will show your codes."
    path, _, query = page.partition("?")
    for url in (f"{path}/state?{query}", page):
        resp = await engine.http.get(url)
        assert "SECRET-CODE-1" not in await resp.text()
    # the storefront still gets them, from its own API
    resp = await engine.http.get(f"/v1/orders/{order_id}", headers=auth(SHOP_A_KEY))
    assert (await resp.json())["codes"] == ["SECRET-CODE-1"]


async def test_state_with_a_wrong_token_is_a_plain_not_found(engine: Engine) -> None:
    order_id, _ = await queued(engine)
    resp = await engine.http.get(f"/q/{order_id}/state?t=nope")
    body = await resp.json(content_type=None)
    assert resp.status == 404 and resp.content_type == "application/problem+json"
    assert body["code"] == "not_found" and order_id not in json.dumps(body)


async def test_cancelled_order_shows_the_outcome_without_a_line(engine: Engine) -> None:
    order_id, page = await queued(engine)
    resp = await engine.http.delete(f"/v1/orders/{order_id}", headers=auth(SHOP_A_KEY))
    assert resp.status == 200
    resp = await engine.http.get(page)
    text = await resp.text()
    assert "This order was cancelled" in text and 'data-status="cancelled"' in text
    assert 'id="row-position" hidden' in text
    status, body = await get_state(engine, page)
    assert status == 200 and body["status"] == "cancelled" and body["text"]["position"] is None


# --- languages -----------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "query", "expected"), [
    ("", "", "en"),
    ("zh-CN,zh;q=0.9,en;q=0.8", "", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "", "en"),
    ("fr-FR, zh-TW;q=0.5", "", "zh"),
    ("en;q=0.4, zh;q=0.7", "", "zh"),
    ("zh;q=0, en;q=0.1", "", "en"),
    ("zh, en", "", "zh"),
    ("de, fr;q=0.9", "", "en"),
    ("zh;q=bogus,,;", "", "en"),
    ("zh-CN", "lang=en", "en"),
    ("en", "lang=zh", "zh"),
    ("zh", "lang=xx", "zh"),
])
def test_language_choice(header: str, query: str, expected: str) -> None:
    headers = {"Accept-Language": header} if header else {}
    request = make_mocked_request("GET", f"/status?{query}", headers=headers)
    assert pages.language(request) == expected


async def test_page_in_chinese_and_english(engine: Engine) -> None:
    _, page = await queued(engine)
    resp = await engine.http.get(page, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    text = await resp.text()
    assert '<html lang="zh-CN">' in text and "您排在第 1 位" in text
    assert "Accept-Language" in resp.headers["Vary"]
    resp = await engine.http.get(page + "&lang=en", headers={"Accept-Language": "zh-CN"})
    text = await resp.text()
    assert '<html lang="en">' in text and "You are number 1 in line" in text
    assert "lang=zh" in text  # the switch to the other language keeps the token
    path, _, query = page.partition("?")
    resp = await engine.http.get(f"{path}/state?{query}&lang=zh")
    assert (await resp.json())["text"]["position"] == "1"
    resp = await engine.http.get("/q/o_0000ffffffffffffffff?t=x",
                                 headers={"Accept-Language": "zh"})
    assert "链接无效" in await resp.text()


@pytest.mark.parametrize(("eta_s", "lang", "expected"), [
    (None, "en", "Not known yet"), (12.5, "en", "Under a minute"),
    (301.0, "en", "About 5 min"), (301.0, "zh", "约 5 分钟"), (None, "zh", "暂无法估计"),
])
def test_eta_wording(eta_s: float | None, lang: str, expected: str) -> None:
    order = Order(order_id="o_0000ffffffffffffffff", status="queued", sku="card-100", qty=1,
                  buyer="b", tier=0, created_at="", updated_at="",
                  queue=QueueInfo(reason="overflow", position=7, eta_s=eta_s,
                                  expires_at=None, page=""))
    text = pages._words(order, pages._messages()[lang])
    assert text.eta == expected and text.position == "7" and text.expires is None


def test_both_languages_have_every_message() -> None:
    raw = resources.files("engine.http").joinpath("static", "messages.json").read_text("utf-8")
    messages = json.loads(raw)
    assert set(messages) == set(pages.LANGS)
    assert set(messages["en"]) == set(messages["zh"])
    assert all(value.strip() for lang in messages.values() for value in lang.values())


# --- /status and assets --------------------------------------------------------------------

async def test_status_page_in_html_and_json(engine: Engine) -> None:
    browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    for accept in (browser_accept, "*/*", ""):
        resp = await engine.http.get("/status", headers={"Accept": accept} if accept else {})
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/html", accept
        assert "All systems normal." in text and 'data-ok="true"' in text
        assert_csp(resp.headers)
    resp = await engine.http.get("/status", headers={"Accept-Language": "zh-CN"})
    assert "所有服务运行正常" in await resp.text()
    for accept in ("application/json", "application/json, text/html;q=0.5"):
        resp = await engine.http.get("/status", headers={"Accept": accept})
        assert resp.status == 200 and resp.content_type == "application/json"
        assert await resp.json() == {"maintenance": None, "pauses": [], "pauses_ahead": [],
                                     "maintenance_scoped": []}


async def test_status_page_lists_notices_escaped(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = {"maintenance": {"mode": "read_only", "reason": "db <upgrade>",
                             "eta": "2026-01-01T02:00:00Z"},
             "pauses": [{"scope": "sku:card-100", "reason": "restock", "until": None}],
             "pauses_ahead": [{"scope": "global", "reason": "<b>holiday</b>",
                               "starts_at": "2026-02-01T00:00:00Z", "ends_at": None}],
             "maintenance_scoped": [{"scope": "sku:card-100", "reason": "re<count>",
                                     "active": True, "eta": None, "starts_at": None}]}
    monkeypatch.setattr(pages, "notices", lambda app: found)
    text = await (await engine.http.get("/status")).text()
    assert 'data-ok="false"' in text and "db &lt;upgrade&gt;" in text
    assert "&lt;b&gt;holiday&lt;/b&gt; (2026-02-01T00:00:00Z)" in text
    assert "sku:card-100: re&lt;count&gt;" in text and "<b>" not in text
    assert "Expected end: 2026-01-01T02:00:00Z" in text and "restock" in text
    resp = await engine.http.get("/status", headers={"Accept": "application/json"})
    assert await resp.json() == found


async def test_page_assets_are_served_from_the_engine(engine: Engine) -> None:
    _, page = await queued(engine)
    text = await (await engine.http.get(page)).text()
    refs = re.findall(r'(?:src|href)="(/assets/[^"]+)"', text)
    assert len(refs) == 2
    for ref in refs:
        resp = await engine.http.get(ref)
        assert resp.status == 200 and resp.content_type in ("text/css", "text/javascript")
        assert "max-age" in resp.headers["Cache-Control"]
        assert_csp(resp.headers)
    resp = await engine.http.get("/assets/messages.json")
    assert resp.status == 404


# --- the page in headless Chromium ---------------------------------------------------------

def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Cdp:
    """A minimal Chrome DevTools Protocol client: commands over one browser websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            future = self.waiting.pop(data.get("id", -1), None)
            if future is None or future.done():
                continue  # an event; the test polls the page instead
            if "error" in data:
                future.set_exception(RuntimeError(f"CDP: {data['error']}"))
            else:
                future.set_result(data.get("result", {}))

    async def send(self, method: str, session: str | None = None,
                   **params: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[self.next_id] = future
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send_json(message)
        return await asyncio.wait_for(future, 30)


class Tab:
    """One page of the browser, attached as a flat session."""

    def __init__(self, cdp: Cdp, session: str) -> None:
        self.cdp = cdp
        self.session = session

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.cdp.send(method, self.session, **params)

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, wanted: Any, timeout: float = 15.0) -> None:
        seen = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            seen = await self.eval(expression)
            if seen == wanted:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{expression} stayed {seen!r}, wanted {wanted!r}")


@contextlib.asynccontextmanager
async def chromium(binary: str, profile: Path) -> AsyncIterator[Cdp]:
    """Headless Chromium on a port it picks itself, read back from DevToolsActivePort."""
    log = (profile.parent / "chromium.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--no-proxy-server",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
        stdout=log, stderr=log, start_new_session=True,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().splitlines()) == 2:
                break
            assert proc.returncode is None, "chromium exited at start"
            await asyncio.sleep(0.1)
        port, ws_path = port_file.read_text().splitlines()
        async with aiohttp.ClientSession() as http, \
                http.ws_connect(f"ws://127.0.0.1:{port}{ws_path}", max_msg_size=0) as ws:
            cdp = Cdp(ws)
            try:
                yield cdp
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(cdp.send("Browser.close"), 5)
                cdp.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cdp.reader
    finally:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            # start_new_session made the browser lead a group of its own: only its processes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        log.close()


async def open_tab(cdp: Cdp, url: str) -> Tab:
    target = await cdp.send("Target.createTarget", url="about:blank")
    attached = await cdp.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
    tab = Tab(cdp, attached["sessionId"])
    # a phone's viewport: the page must work at 375 CSS pixels
    await tab.send("Emulation.setDeviceMetricsOverride", width=375, height=720,
                   deviceScaleFactor=2, mobile=True)
    await tab.send("Page.enable")
    await tab.send("Page.navigate", url=url)
    await tab.wait_for("document.readyState", "complete")
    return tab


async def test_waiting_page_follows_the_line_in_chromium(engine: Engine, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (apt-get install -y chromium)")
    pages_ = [(await queued(engine))[1] for _ in range(3)]
    profile = tmp_path / "profile"
    profile.mkdir()
    async with chromium(binary, profile) as cdp:
        tab = await open_tab(cdp, str(engine.http.make_url(pages_[2])))
        position = "document.getElementById('position').textContent"
        assert await tab.eval(position) == "3"
        assert await tab.eval("document.documentElement.scrollWidth") <= 375
        await tab.eval("window.notReloaded = true")
        await engine.import_codes("card-100", ["BROWSER-CODE-1"], lot="b1")
        await tab.wait_for(position, "2")
        await tab.wait_for("document.getElementById('headline').textContent",
                           "You are number 2 in line")
        assert await tab.eval("window.notReloaded") is True
        ARTIFACTS.mkdir(exist_ok=True)
        shot = await tab.send("Page.captureScreenshot", format="png")
        (ARTIFACTS / "waiting-page.png").write_bytes(base64.b64decode(shot["data"]))
        # served: the outcome replaces the line, and polling stops
        await engine.import_codes("card-100", ["BROWSER-CODE-2", "BROWSER-CODE-3"], lot="b2")
        await tab.wait_for("document.getElementById('q').dataset.status", "fulfilled")
        assert await tab.eval("document.getElementById('headline').textContent") == \
            "Your order is complete"
        assert await tab.eval("document.getElementById('row-position').hidden") is True
        assert "BROWSER-CODE" not in await tab.eval("document.body.innerText")
        assert await tab.eval("window.notReloaded") is True


def test_page_links_expire_and_cannot_be_stretched() -> None:
    from engine.config.directory import Directory
    from tests.conftest import make_settings

    directory = Directory(make_settings(server={"page_link_ttl_s": 600}), "secret")
    token = directory.page_token("o_1", now_s=1_000_000)
    assert directory.page_token_valid("o_1", token, now_s=1_000_000 + 599)
    assert not directory.page_token_valid("o_1", token, now_s=1_000_000 + 601)
    assert not directory.page_token_valid("o_2", token, now_s=1_000_000)
    stamp, _, mac = token.partition(".")
    stretched = f"{int(stamp, 16) + 10**6:x}.{mac}"
    assert not directory.page_token_valid("o_1", stretched, now_s=1_000_000)
    assert not directory.page_token_valid("o_1", "nonsense", now_s=1_000_000)


def test_page_tokens_take_only_the_hex_the_engine_writes() -> None:
    """The same expiry written another way (0x, sign, spaces, underscores, capitals) is not
    the token the engine signed: refused, even with the right MAC."""
    from engine.config.directory import Directory
    from tests.conftest import make_settings

    directory = Directory(make_settings(server={"page_link_ttl_s": 600}), "secret")
    token = directory.page_token("o_1", now_s=1_000_000)
    stamp, _, mac = token.partition(".")
    assert directory.page_token_valid("o_1", token, now_s=1_000_000)
    for other in (f"0x{stamp}", f"+{stamp}", f" {stamp}", f"{stamp} ", f"{stamp[:2]}_{stamp[2:]}",
                  stamp.upper(), f"0{stamp}" * 3, ""):
        assert not directory.page_token_valid("o_1", f"{other}.{mac}", now_s=1_000_000), other
