"""Maintenance toggled under load: buyers order steadily while one operator closes the order
writes mid-run (`read_only` for a few seconds, then `off`; then once more scoped to
`sku:<KAMIGATE_SKU>`). `503 maintenance` answers with `Retry-After` during a window (or up to
GRACE_S after it, while the other front doors follow) are expected: locust counts them as
successes under their own name, `/v1/orders (503 maintenance)`. Any other 5xx, or a
maintenance answer outside every window, is a failure.

When the run ends (at its time limit, or stopped early) the scenario turns off every window
it opened, checks over the API that maintenance is off again (GET /status shows none and an
order is no longer answered 503), and that no admitted order was lost: every order answered
201 or 202 (all of them up to KAMIGATE_CHECK_ORDERS, else a sample that keeps every 202) can
be read with GET /v1/orders/{id} and is no longer `pending` within KAMIGATE_SETTLE_S. A lost
or stuck order, maintenance left on, an unexpected 5xx, or a missed SLO fails the run.

Usage:  locust -f loadtests/maintenance_toggle.py --headless -u 101 -r 100 -t 60s \
            --host http://127.0.0.1:8080
        (-u counts the one operator user; run it in one locust process, not --processes)

Environment, besides the common ones (KAMIGATE_KEY, KAMIGATE_ADMIN_KEY, KAMIGATE_SKU,
KAMIGATE_MAX_FAIL_RATIO, KAMIGATE_MAX_P99_MS):
  KAMIGATE_OPERATOR_KEY     key with the operator role (default KAMIGATE_ADMIN_KEY)
  KAMIGATE_MAINTENANCE_AT   seconds from the start to the global window (default a third of
                            -t, else 20); the scoped window opens at twice that
  KAMIGATE_MAINTENANCE_S    length of each window (default a sixth of -t, at most 5)
  KAMIGATE_MAINTENANCE_SCOPED  0: no scoped window (default 1)
  KAMIGATE_CHECK_ORDERS     admitted orders read back at the end (default 2000)
  KAMIGATE_SETTLE_S         how long to wait for pending orders to settle (default 30)
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import gevent
import gevent.pool
import urllib3
from locust import FastHttpUser, constant_throughput, task

from loadtests.common import (
    ADMIN_KEY,
    KEY,
    ORDER_ANSWERS,
    SKU,
    Buyer,
    at_the_end,
    call,
    report,
)
from loadtests.payloads import order

OPERATOR_KEY = os.environ.get("KAMIGATE_OPERATOR_KEY", ADMIN_KEY)
CHECK_ORDERS = int(os.environ.get("KAMIGATE_CHECK_ORDERS", "2000"))
SETTLE_S = float(os.environ.get("KAMIGATE_SETTLE_S", "30"))
SCOPED = os.environ.get("KAMIGATE_MAINTENANCE_SCOPED", "1") != "0"
GRACE_S = 2.0  # other front doors follow a switch within a second
REASON = "load test: loadtests/maintenance_toggle.py"


@dataclass
class Window:
    scope: str
    opened: float  # monotonic, taken before the switch was sent
    closed: float | None = None  # monotonic, when `off` was answered


@dataclass
class Run:
    """What this process saw; read by the end-of-run check."""

    windows: list[Window] = field(default_factory=list)
    admitted: list[tuple[str, int]] = field(default_factory=list)  # (order id, HTTP status)
    expected_503: int = 0
    stray_503: int = 0
    other_5xx: int = 0
    finished: bool = False

    def open_scopes(self) -> list[str]:
        return [w.scope for w in self.windows if w.closed is None]

    def in_window(self, now: float) -> bool:
        return any(w.opened <= now and (w.closed is None or now <= w.closed + GRACE_S)
                   for w in self.windows)


RUN = Run()


def _is_maintenance(status: int, headers: Any, text: str) -> bool:
    if status != 503 or not headers.get("Retry-After"):
        return False
    try:
        return bool(json.loads(text).get("code") == "maintenance")
    except (ValueError, AttributeError):
        return False


class MaintenanceBuyer(Buyer):
    """A new buyer each order, once a second; maintenance answers are expected, counted apart."""

    wait_time = constant_throughput(1)

    @task
    def buy(self) -> None:
        with self.client.post("/v1/orders", json=order(self.sku), name="/v1/orders",
                              headers={"Authorization": f"Bearer {KEY}"},
                              catch_response=True) as resp:
            status = resp.status_code
            text = resp.text or ""
            if _is_maintenance(status, resp.headers, text):
                resp.request_meta["name"] = "/v1/orders (503 maintenance)"
                if RUN.in_window(time.monotonic()):
                    RUN.expected_503 += 1
                    resp.success()
                else:
                    RUN.stray_503 += 1
                    resp.failure("503 maintenance outside every maintenance window")
            elif status not in ORDER_ANSWERS:
                RUN.other_5xx += status >= 500
                resp.failure(f"unexpected {status}: {text[:200]}")
            elif "RateLimit" not in resp.headers:
                resp.failure("no RateLimit header")
            else:
                resp.success()
                if status in (201, 202):
                    RUN.admitted.append((resp.json()["order_id"], status))


def _schedule(environment: Any) -> tuple[float, float]:
    """(seconds from the start to the global window, window length)."""
    run_time = getattr(environment.parsed_options, "run_time", None) or 0
    at = float(os.environ.get("KAMIGATE_MAINTENANCE_AT", run_time / 3 if run_time else 20))
    length = float(os.environ.get("KAMIGATE_MAINTENANCE_S",
                                  min(5.0, run_time / 6) if run_time else 5))
    return at, length


def _eta(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=max(1.0, seconds))).isoformat(
        timespec="seconds")


class Operator(FastHttpUser):
    """One operator: global read_only at KAMIGATE_MAINTENANCE_AT, then sku:<sku>, each off
    again after KAMIGATE_MAINTENANCE_S."""

    fixed_count = 1
    wait_time = constant_throughput(1)

    def switch(self, scope: str, mode: str, length: float = 0) -> bool:
        """PUT /admin/maintenance; a window counts from before the switch is sent until
        `off` is answered (a refused switch opens nothing: the engine stored nothing)."""
        body: dict[str, Any] = {"mode": mode, "scope": scope}
        if mode != "off":
            body.update(reason=REASON, eta=_eta(length))
            RUN.windows.append(Window(scope, time.monotonic()))
        with self.client.put("/admin/maintenance", json=body, name="/admin/maintenance",
                             headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
                             catch_response=True) as resp:
            done = resp.status_code == 200
            if not done:
                resp.failure(f"maintenance {mode} {scope}: {resp.status_code} "
                             f"{(resp.text or '')[:200]}")
        if done and mode != "off":
            return True
        for window in RUN.windows:
            if window.scope == scope and window.closed is None and (done or mode != "off"):
                window.closed = time.monotonic()
        return done

    @task
    def toggle(self) -> None:
        at, length = _schedule(self.environment)
        start = time.monotonic()
        plan = [(at, "global")] + ([(2 * at, f"sku:{SKU}")] if SCOPED else [])
        for when, scope in plan:
            gevent.sleep(max(0.0, start + when - time.monotonic()))
            if not self.switch(scope, "read_only", length):
                continue
            gevent.sleep(length)
            for _ in range(10):  # the end-of-run check tries once more
                if self.switch(scope, "off"):
                    break
                gevent.sleep(0.5)
        while True:  # done; idle until the run ends
            gevent.sleep(3600)


# -- the end of the run ------------------------------------------------------------------------
def _call(http: urllib3.PoolManager, method: str, url: str, key: str,
          body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    return call(http, method, url, {"Authorization": f"Bearer {key}",
                                    "Accept": "application/json"}, json=body)


def _turn_off(http: urllib3.PoolManager, host: str) -> list[str]:
    """Close every window this run opened (PUT off), then check maintenance is off over the
    API; the problems found."""
    for scope in dict.fromkeys(RUN.open_scopes()):
        status, found = _call(http, "PUT", f"{host}/admin/maintenance", OPERATOR_KEY,
                              {"mode": "off", "scope": scope})
        if status != 200:
            return [f"could not turn maintenance off ({scope}): {status} {found}"]
        for window in RUN.windows:
            if window.scope == scope and window.closed is None:
                window.closed = time.monotonic()
    deadline = time.monotonic() + 5
    while True:
        _, notices = _call(http, "GET", f"{host}/status", KEY)
        status, placed = _call(http, "POST", f"{host}/v1/orders", KEY, order(SKU))
        if status in (201, 202):
            RUN.admitted.append((placed["order_id"], status))
        closed = status == 503 and placed.get("code") == "maintenance"
        if notices.get("maintenance") is None and not closed:
            return []
        if time.monotonic() > deadline:
            return [f"maintenance still on: /status {notices.get('maintenance')}, "
                    f"an order answered {status} {placed.get('detail', '')}"]
        gevent.sleep(0.5)


def _to_check() -> list[str]:
    """Every admitted order, or a sample that keeps all 202s (those were not settled yet)."""
    if len(RUN.admitted) <= CHECK_ORDERS:
        return [oid for oid, _ in RUN.admitted]
    later = [oid for oid, status in RUN.admitted if status == 202]
    settled = [oid for oid, status in RUN.admitted if status != 202]
    room = max(0, CHECK_ORDERS - len(later))
    return later + random.sample(settled, min(room, len(settled)))


def _lost_orders(http: urllib3.PoolManager, host: str, ids: list[str]) -> dict[str, str]:
    """Orders that cannot be read back, or still `pending`, after SETTLE_S: id -> what."""
    open_ids = dict.fromkeys(ids, "not read")
    deadline = time.monotonic() + SETTLE_S
    pool = gevent.pool.Pool(16)

    def read(order_id: str) -> None:
        status, found = _call(http, "GET", f"{host}/v1/orders/{order_id}", KEY)
        if status == 200 and found.get("status") not in (None, "pending"):
            del open_ids[order_id]
        else:
            open_ids[order_id] = "pending" if status == 200 else f"answered {status}"

    while open_ids:
        pool.map(read, list(open_ids))
        if not open_ids or time.monotonic() > deadline:
            break
        gevent.sleep(0.5)
    return open_ids


def _finish(environment: Any) -> None:
    if RUN.finished:
        return
    RUN.finished = True
    host = (environment.host or "http://127.0.0.1:8080").rstrip("/")
    http = urllib3.PoolManager(maxsize=16)
    problems = _turn_off(http, host)
    ids = _to_check()
    lost = _lost_orders(http, host, ids)
    stuck = sum(1 for what in lost.values() if what == "pending")
    if not RUN.windows:
        problems.append("no maintenance window was opened (the run ended before "
                        "KAMIGATE_MAINTENANCE_AT)")
    if lost:
        problems.append(f"{len(lost) - stuck} admitted orders lost, {stuck} still pending "
                        f"after {SETTLE_S:.0f} s, e.g. {next(iter(lost.items()))}")
    if RUN.stray_503:
        problems.append(f"{RUN.stray_503} answers 503 maintenance outside every window")
    if RUN.other_5xx:
        problems.append(f"{RUN.other_5xx} other 5xx answers to POST /v1/orders")
    scopes = ", ".join(f"{w.scope} {(w.closed or time.monotonic()) - w.opened:.1f} s"
                       for w in RUN.windows)
    n = len(RUN.windows)
    print(f"maintenance toggle: {n} window{'' if n == 1 else 's'} ({scopes}), "
          f"{RUN.expected_503} answers 503 maintenance (expected), {RUN.stray_503} stray; "
          f"{len(RUN.admitted)} orders admitted, {len(ids)} read back, "
          f"{len(lost) - stuck} lost, {stuck} pending")
    report(environment, "maintenance toggle", problems, "maintenance off, no admitted order lost")


at_the_end(_finish)
