"""Buyer pages (no key): the waiting page behind a signed link, its state, and /status."""

from __future__ import annotations

import functools
import hashlib
import html
import json
from importlib import resources
from string import Template
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from engine import errors
from engine.clock import now_ms
from engine.controls.maintenance import MaintenanceState
from engine.http.codec import accept_weights
from engine.http.notices import announce_pause, waits_behind
from engine.http.state import DIRECTORY, DRAIN, MAINTENANCE, PAUSES, REDIS
from engine.store import records
from engine.views import record_view
from engine.wire import Order, PageState, PageText, json_encode

LANGS = ("en", "zh")
HTML_LANG = {"en": "en", "zh": "zh-CN"}
DECIDED = frozenset({"fulfilled", "rejected", "expired", "cancelled"})
ASSETS = {"page.css": "text/css", "queue.js": "text/javascript"}

# Pages hold a bearer-like token in their URL: nothing is loaded from elsewhere, nothing is
# framed, nothing is cached by proxies, and no Referer carries the token away.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
NO_STORE = {**SECURITY_HEADERS, "Cache-Control": "no-store", "Vary": "Accept-Language"}


@functools.cache
def _static(name: str) -> str:
    return resources.files("engine.http").joinpath("static", name).read_text("utf-8")


@functools.cache
def _messages() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads(_static("messages.json"))
    return loaded


@functools.cache
def _asset_url(name: str) -> str:
    # The content hash in the URL lets browsers cache assets for long and still see new ones.
    digest = hashlib.sha256(_static(name).encode()).hexdigest()[:12]
    return f"/assets/{name}?v={digest}"


def language(request: web.Request) -> str:
    """`?lang=` when it names one of ours, else the best of zh and en by Accept-Language."""
    forced = request.query.get("lang", "")
    if forced in LANGS:
        return forced
    weights = accept_weights(request.headers.get("Accept-Language", ""))
    ranked = [(q, -i, tag.split("-")[0]) for i, (tag, q) in enumerate(weights)
              if q > 0 and tag.split("-")[0] in LANGS]
    return max(ranked)[2] if ranked else "en"


def _wants_json(request: web.Request) -> bool:
    weights = accept_weights(request.headers.get("Accept", ""))
    json_q = max((q for t, q in weights if t == "application/json"), default=0.0)
    html_q = max((q for t, q in weights if t in ("text/html", "text/*", "*/*")), default=0.0)
    return json_q > html_q


def _fill(template: str, raw: dict[str, str] | None = None, **values: str) -> str:
    escaped = {k: html.escape(v, quote=True) for k, v in values.items()}
    return Template(_static(template)).substitute(escaped, **(raw or {}))


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=NO_STORE)


def _lang_values(request: web.Request, lang: str) -> dict[str, str]:
    other = "zh" if lang == "en" else "en"
    query = {**request.query, "lang": other}
    return {"html_lang": HTML_LANG[lang], "other_lang": HTML_LANG[other],
            "other_lang_name": _messages()[other]["lang_name"],
            "other_lang_url": f"{request.path}?{urlencode(query)}",
            "css": _asset_url("page.css")}


def _invalid(request: web.Request) -> web.Response:
    # One answer for a missing token, a wrong one and an unknown order alike.
    lang = language(request)
    msgs = _messages()[lang]
    return _html(_fill("message.html", html_lang=HTML_LANG[lang], css=_asset_url("page.css"),
                       title=msgs["invalid_title"], body=msgs["invalid_body"]), status=404)


async def _state(request: web.Request) -> PageState | None:
    """The order's page state when the link's token is right, else None."""
    directory = request.app[DIRECTORY].current
    order_id = request.match_info["order_id"]
    if not directory.page_token_valid(order_id, request.query.get("t", "")):
        return None
    redis = request.app[REDIS]
    record = await records.read_to_show(redis, order_id)
    if record is None:
        return None
    position = await records.position(redis, record)
    req = record.request
    order = announce_pause(request.app, record_view(
        directory, record, position, request.app.get(DRAIN),
        waits_behind(request.app, req.storefront, req.sku, req.tier, record.reason), now_ms()),
        req.storefront)
    queue = order.queue
    closed = request.app[MAINTENANCE].state
    lead = directory.settings.maintenance.notice_lead_s
    closing = closed.notice(now_ms(), lead) if closed.mode != "off" else None
    return PageState(
        status=order.status,
        position=queue.position if queue else None,
        eta_s=queue.eta_s if queue else None,
        expires_at=queue.expires_at if queue else None,
        notice=" · ".join(n for n in (closing, order.notice) if n) or None,
        reason=queue.reason if queue else order.reason,
        text=_words(order, _messages()[language(request)]),
    )


def _words(order: Order, msgs: dict[str, str]) -> PageText:
    status = order.status if f"headline_{order.status}" in msgs else "pending"
    headline, detail = msgs[f"headline_{status}"], msgs[f"detail_{status}"]
    if status == "rejected":
        detail = msgs.get(f"reason_{order.reason}", detail)
    queue = order.queue
    if status != "queued" or queue is None:
        return PageText(headline=headline, detail=detail, position=None, eta=None, expires=None)
    if queue.position is not None:
        headline = msgs["headline_queued_at"].format(n=queue.position)
    detail = msgs.get(f"queue_{queue.reason}", detail)
    if queue.eta_s is None:
        eta = msgs["eta_unknown"]
    elif queue.eta_s < 60:
        eta = msgs["eta_soon"]
    else:
        eta = msgs["eta_minutes"].format(n=round(queue.eta_s / 60))
    # UTC for the first paint; the script rewrites it in the buyer's own time zone.
    expires = queue.expires_at.replace("T", " ")[:16] + " UTC" if queue.expires_at else None
    position = None if queue.position is None else str(queue.position)
    return PageText(headline=headline, detail=detail, position=position, eta=eta,
                    expires=expires)


async def queue_page(request: web.Request) -> web.Response:
    """GET /q/{order_id}?t=: the waiting page, rendered with the current state."""
    state = await _state(request)
    if state is None:
        return _invalid(request)
    lang = language(request)
    msgs = _messages()[lang]
    order_id = request.match_info["order_id"]
    text = state.text
    hidden = {f"{name}_hidden": "" if getattr(text, name) is not None else "hidden"
              for name in ("position", "eta", "expires")}
    query = urlencode({"t": request.query["t"], "lang": lang})
    state_url = f"/q/{quote(order_id, safe='')}/state?{query}"
    return _html(_fill(
        "queue.html", raw=hidden, **_lang_values(request, lang),
        js=_asset_url("queue.js"), title=msgs["title"], heading=msgs["heading"],
        order_label=msgs["order"], order_id=order_id, state_url=state_url,
        status=state.status, lost=msgs["lost"], gone=msgs["gone"],
        headline=text.headline, detail=text.detail,
        position_label=msgs["position"], position=text.position or "",
        eta_label=msgs["eta"], eta=text.eta or "",
        expires_label=msgs["expires"], expires_at=state.expires_at or "",
        expires=text.expires or "", notice=state.notice or "",
        notice_hidden="" if state.notice else "hidden",
        keep_open="" if state.status in DECIDED else msgs["keep_open"],
        status_link=msgs["status_link"],
    ))


async def queue_state(request: web.Request) -> web.Response:
    """GET /q/{order_id}/state?t=: what the waiting page polls."""
    state = await _state(request)
    if state is None:
        raise errors.NotFound("this link is not valid")
    return web.Response(body=json_encode(state), content_type="application/json",
                        headers=NO_STORE)


def notices(app: web.Application) -> dict[str, Any]:
    """Maintenance and pause notices: what is in force, and what is announced ahead."""
    state = app[MAINTENANCE].state
    board = app[PAUSES]
    found: dict[str, Any] = {"maintenance": None, "pauses": [
        {k: v for k, v in p.to_json().items() if k != "source"}
        for p in board.in_force.values()],
        "pauses_ahead": [a.to_json() for a in sorted(board.ahead.values(),
                                                       key=lambda a: a.window.starts_at)]}
    now = now_ms()
    lead = app[DIRECTORY].current.settings.maintenance.notice_lead_s
    if state.notice(now, lead):
        found["maintenance"] = _window(state, now)
    found["maintenance_scoped"] = [_window(w, now) for w in app[MAINTENANCE].scoped.values()
                                   if w.notice(now, lead)]
    return found


def _window(state: MaintenanceState, now: int) -> dict[str, Any]:
    return {"mode": state.mode, "active": state.active(now) != "off", "reason": state.reason,
            "eta": state.eta, "starts_at": state.starts_at, "scope": state.scope,
            "action": state.action}


def _notice_items(found: dict[str, Any], msgs: dict[str, str]) -> list[str]:
    items: list[tuple[str, str, str | None]] = []
    maintenance = found["maintenance"]
    if maintenance:
        items.append((msgs["status_maintenance"], maintenance.get("reason") or "",
                      maintenance.get("eta")))
    items += [(msgs["status_maintenance"], f'{w["scope"]}: {w["reason"]}'
               + ("" if w["active"] else f' ({w["starts_at"]})'), w.get("eta"))
              for w in found["maintenance_scoped"]]
    items += [(msgs["status_paused"], p.get("reason") or "", p.get("until"))
              for p in found["pauses"]]
    items += [(msgs["status_pause_ahead"], f'{p.get("reason") or p.get("holiday") or ""} '
               f'({p["starts_at"]})', p.get("ends_at")) for p in found["pauses_ahead"]]
    until = msgs["status_until"]
    return [f"<li><strong>{html.escape(kind)}</strong> {html.escape(reason)}"
            + (f" ({html.escape(until)}: {html.escape(end)})" if end else "") + "</li>"
            for kind, reason, end in items]


async def status_page(request: web.Request) -> web.Response:
    """GET /status: notices as HTML, or as JSON for `Accept: application/json`."""
    found = notices(request.app)
    if _wants_json(request):
        return web.Response(body=json_encode(found), content_type="application/json",
                            headers={**NO_STORE, "Vary": "Accept, Accept-Language"})
    lang = language(request)
    msgs = _messages()[lang]
    items = _notice_items(found, msgs)
    body = (f'<ul class="notices">{"".join(items)}</ul>' if items
            else f'<p class="headline">{html.escape(msgs["status_ok"])}</p>')
    response = _html(_fill("status.html", raw={"notices": body}, **_lang_values(request, lang),
                           title=msgs["status_title"], ok="false" if items else "true"))
    response.headers["Vary"] = "Accept, Accept-Language"
    return response


async def asset(request: web.Request) -> web.Response:
    """GET /assets/{name}: the pages' stylesheet and script."""
    name = request.match_info["name"]
    if name not in ASSETS:
        raise errors.NotFound(f"no asset {name!r}")
    return web.Response(text=_static(name), content_type=ASSETS[name], charset="utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/q/{order_id}", queue_page),
        web.get("/q/{order_id}/state", queue_state),
        web.get("/status", status_page),
        web.get("/assets/{name}", asset),
    ]
