"""Live config changes under load: buyers order steadily while one admin, every
KAMIGATE_RELOAD_EVERY_S seconds, changes the SKU's `max_qty` (one up, then back, and so on)
with PUT /admin/config and checks that the change is visible: GET /admin/config answers a
higher version with the new value within 2 s. When the run ends the original config is put
back and checked (the sha256 from GET /admin/config is the one from before the run). A 5xx
answer to POST /v1/orders, a change refused or not visible, a restore that does not match,
or a missed SLO fails the run.

Where the config comes from:
  - with KAMIGATE_CONFIG (the engine's config file, as for flash_sale.py): the file is read
    as TOML, never written; each change is the file's document with the SKU's max_qty
    changed, PUT as application/json (the same document; the API takes TOML or JSON), and
    the file's document is PUT back at the end. Before changing anything the scenario checks
    that the file is what the fleet runs (the sha256 the `engine` package computes for it,
    when importable here, is the running one; or else every key the file sets has its
    running value) and refuses otherwise.
  - without it: the `config` field of GET /admin/config is PUT back, changed (its secrets,
    shown as "***", keep their running values on a PUT).
POST /admin/config/reload is not used: it would need the file rewritten under the engine.

Usage:  locust -f loadtests/config_reload.py --headless -u 101 -r 100 -t 60s \
            --host http://127.0.0.1:8080
        (-u counts the one admin user; run it in one locust process, not --processes)

Environment, besides the common ones (KAMIGATE_KEY, KAMIGATE_SKU, KAMIGATE_MAX_FAIL_RATIO,
KAMIGATE_MAX_P99_MS): KAMIGATE_ADMIN_KEY must have the admin role; KAMIGATE_CONFIG as above;
KAMIGATE_RELOAD_EVERY_S (default 5).
"""

from __future__ import annotations

import copy
import json
import os
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any

import gevent
import urllib3
from locust import FastHttpUser, constant, constant_throughput, events, task

from loadtests.common import ADMIN_KEY, SKU, Buyer, at_the_end, call, report

CONFIG_PATH = os.environ.get("KAMIGATE_CONFIG") or None
EVERY_S = float(os.environ.get("KAMIGATE_RELOAD_EVERY_S", "5"))
VISIBLE_S = 2.0  # the contract is 1 s for every process; a little room for a loaded host
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Reload:
    """What this process did and saw; read by the end-of-run check."""

    source: str = ""
    document: dict[str, Any] | None = None  # the original document, as it will be put back
    original: dict[str, Any] = field(default_factory=dict)  # GET /admin/config before the run
    base_qty: int = 0
    current_qty: int = 0
    applied: list[int] = field(default_factory=list)  # versions seen applied
    invisible: int = 0
    refused: int = 0
    order_5xx: int = 0
    problem: str = ""  # why the run refused to start
    finished: bool = False


STATE = Reload()


class ReloadBuyer(Buyer):
    """One order a second per user, from a new buyer each time."""

    wait_time = constant_throughput(1)

    @task
    def buy(self) -> None:
        self.post_order()


@events.request.add_listener
def count_order_5xx(name: str, response: Any = None, **_: Any) -> None:
    if name == "/v1/orders" and response is not None and \
            (getattr(response, "status_code", 0) or 0) >= 500:
        STATE.order_5xx += 1


def _sku_entry(document: dict[str, Any]) -> dict[str, Any] | None:
    skus = document.get("skus")
    return next((s for s in skus if isinstance(s, dict) and s.get("id") == SKU), None) \
        if isinstance(skus, list) else None


def _mismatch(mine: Any, live: Any, key: str = "") -> str:
    """The first key the file sets to something other than what runs ("" when none);
    a redacted secret matches anything."""
    if isinstance(mine, dict):
        if not isinstance(live, dict):
            return key or "(document)"
        for name, value in mine.items():
            found = _mismatch(value, live.get(name), f"{key}.{name}" if key else name)
            if found:
                return found
        return ""
    if isinstance(mine, list):
        if not isinstance(live, list) or len(live) != len(mine):
            return key
        return next((f for i, (a, b) in enumerate(zip(mine, live, strict=True))
                     if (f := _mismatch(a, b, f"{key}[{i}]"))), "")
    return "" if live == "***" or mine == live else key


def _file_differs(document: dict[str, Any], view: dict[str, Any]) -> str:
    """Why the file is not the running config, "" when it is: the sha256 the `engine`
    package here computes for it is the running one, or else every key the file sets has
    the running value (the engine here may be another version than the fleet's)."""
    try:
        from engine.config import ConfigError, from_mapping
        from engine.config.redaction import public_sha256

        if public_sha256(from_mapping(document)) == view["sha256"]:
            return ""
    except (ImportError, ConfigError):
        pass
    key = _mismatch(document, view["config"])
    if key:
        return (f"{CONFIG_PATH} is not the config the fleet runs ({key} differs; running "
                f"sha256 {view['sha256'][:12]}): putting it back at the end would change the "
                "fleet; apply it first (kamigate config diff shows what differs)")
    return ""


def _prepare(view: dict[str, Any]) -> None:
    """Take the original document and the SKU's max_qty; STATE.problem when it cannot."""
    effective = _sku_entry(view["config"])
    if effective is None:
        STATE.problem = f"no SKU {SKU!r} in the running config"
        return
    if CONFIG_PATH:
        try:
            with open(CONFIG_PATH, "rb") as f:
                document = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            STATE.problem = f"cannot read KAMIGATE_CONFIG {CONFIG_PATH}: {exc}"
            return
        STATE.problem = _file_differs(document, view)
        if not STATE.problem and _sku_entry(document) is None:
            STATE.problem = f"no [[skus]] id = {SKU!r} in {CONFIG_PATH}"
        STATE.source = CONFIG_PATH
    else:
        document = copy.deepcopy(view["config"])
        STATE.source = "GET /admin/config"
    STATE.document = document
    STATE.original = view
    STATE.base_qty = STATE.current_qty = int(effective["max_qty"])


class ConfigAdmin(FastHttpUser):
    """One admin changing the SKU's max_qty every EVERY_S seconds."""

    fixed_count = 1
    wait_time = constant(EVERY_S)

    def on_start(self) -> None:
        if STATE.document is None and not STATE.problem:
            with self.client.get("/admin/config", headers=ADMIN, name="/admin/config",
                                 catch_response=True) as resp:
                if resp.status_code != 200:
                    resp.failure(f"GET /admin/config: {resp.status_code}")
                    STATE.problem = f"GET /admin/config answered {resp.status_code}"
                else:
                    _prepare(resp.json())
        if STATE.problem:  # the end-of-run check says why
            gevent.spawn(self.environment.runner.quit)

    @task
    def change(self) -> None:
        if STATE.document is None or STATE.problem:
            return
        base = STATE.base_qty
        value = (base - 1 if base >= 1000 else base + 1) if STATE.current_qty == base else base
        document = copy.deepcopy(STATE.document)
        entry = _sku_entry(document)
        assert entry is not None
        entry["max_qty"] = value
        with self.client.put("/admin/config", data=json.dumps(document, default=str),
                             headers={**ADMIN, "Content-Type": "application/json"},
                             name="/admin/config [PUT]", catch_response=True) as resp:
            answer = resp.json() if resp.status_code == 200 else {}
            if not answer.get("changed"):
                STATE.refused += 1
                resp.failure(f"PUT /admin/config: {resp.status_code} "
                             f"{(resp.text or '')[:300]}")
                return
        STATE.current_qty = value
        self.check_visible(int(answer["version"]), value)

    def check_visible(self, version: int, value: int) -> None:
        """GET /admin/config shows the version (or a later one) with the new max_qty."""
        started = time.monotonic()
        seen: Any = None
        while time.monotonic() - started < VISIBLE_S:
            resp = self.client.get("/admin/config", headers=ADMIN, name="/admin/config")
            if resp.status_code == 200:
                view = resp.json()
                entry = _sku_entry(view["config"]) or {}
                seen = (view["version"], entry.get("max_qty"))
                if view["version"] >= version and entry.get("max_qty") == value:
                    if STATE.applied and version <= STATE.applied[-1]:
                        break  # a version that did not increase
                    STATE.applied.append(version)
                    return
            gevent.sleep(0.1)
        STATE.invisible += 1
        self.environment.events.request.fire(
            request_type="CHECK", name="config change visible", response_length=0,
            response_time=(time.monotonic() - started) * 1000, context={},
            exception=AssertionError(f"version {version} with max_qty {value} not seen "
                                     f"(last seen version, max_qty: {seen})"))


# -- the end of the run ------------------------------------------------------------------------
def _call(http: urllib3.PoolManager, method: str, url: str,
          body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    return call(http, method, url, {**ADMIN, "Content-Type": "application/json"}, body=body)


def _restore(host: str) -> tuple[str, str]:
    """PUT the original document back; (problem or "", what the fleet runs now). Restored
    means the effective config (GET /admin/config) is the one from before the run. Its
    sha256 is the original one too when the document came from the file; one that came from
    GET /admin/config may hash differently for the same settings (e.g. 86400 where the
    original had a default of 86400.0), which is then said, not failed."""
    http = urllib3.PoolManager()
    body = json.dumps(STATE.document, default=str).encode()
    sha256 = STATE.original["sha256"]
    running = ""
    for _ in range(2):  # twice: a change cut off by the stop may land after the first
        status, answer = _call(http, "PUT", f"{host}/admin/config", body)
        if status != 200:
            return f"restoring the config: PUT answered {status} {answer}", running
        gevent.sleep(0.3)
        status, view = _call(http, "GET", f"{host}/admin/config")
        if status == 200:
            running = f"version {view['version']}, sha256 {view['sha256'][:12]}"
            if view["config"] == STATE.original["config"]:
                same = view["sha256"] == sha256
                return "", running + (" (the original)" if same else
                                      f" (the original settings; sha256 was {sha256[:12]})")
    return (f"restored config differs from the original (sha256 {sha256[:12]} before the "
            f"run, now {running})"), running


def _finish(environment: Any) -> None:
    if STATE.finished:
        return
    STATE.finished = True
    host = (environment.host or "http://127.0.0.1:8080").rstrip("/")
    problems = [f"refused to start: {STATE.problem}"] if STATE.problem else []
    running = ""
    if STATE.document is not None and not STATE.problem:
        problem, running = _restore(host)
        problems += [problem] if problem else []
        if not STATE.applied:
            problems.append("no config change was applied")
    if STATE.invisible or STATE.refused:
        problems.append(f"{STATE.refused} changes refused, {STATE.invisible} not visible "
                        f"within {VISIBLE_S:.0f} s")
    if STATE.order_5xx:
        problems.append(f"{STATE.order_5xx} answers 5xx to POST /v1/orders")
    versions = f" (versions {STATE.applied[0]}..{STATE.applied[-1]})" if STATE.applied else ""
    print(f"config reload: {len(STATE.applied)} versions applied{versions} from "
          f"{STATE.source or '-'}, {STATE.invisible} not visible, {STATE.order_5xx} 5xx "
          f"on POST /v1/orders; restored: {running or '-'}")
    report(environment, "config reload", problems, "every change visible, original config restored")


at_the_end(_finish)
