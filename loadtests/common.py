"""What every kamigate load scenario shares: the target, a buyer that checks each answer
against the API contract, and the SLO check that sets the exit code when the run ends.

Environment: KAMIGATE_KEY (storefront bearer key; default the demo's), KAMIGATE_ADMIN_KEY,
KAMIGATE_SKU, KAMIGATE_MAX_FAIL_RATIO (default 0.01), KAMIGATE_MAX_P99_MS (default 250).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from locust import FastHttpUser, events

from loadtests.payloads import order

KEY = os.environ.get("KAMIGATE_KEY", "demo-shop-key")
ADMIN_KEY = os.environ.get("KAMIGATE_ADMIN_KEY", "demo-admin-key")
SKU = os.environ.get("KAMIGATE_SKU", "steam-cn-100")
MAX_FAIL_RATIO = float(os.environ.get("KAMIGATE_MAX_FAIL_RATIO", "0.01"))
MAX_P99_MS = float(os.environ.get("KAMIGATE_MAX_P99_MS", "250"))

# Answers the contract allows for POST /v1/orders under load: filled, held, queued, pending,
# rejected by policy, or turned away by a rate limit. Anything else (5xx above all) fails.
ORDER_ANSWERS = {201, 202, 409, 429}


class Buyer(FastHttpUser):
    """A buyer posting orders; each answer is checked, any other status is a failure."""

    abstract = True
    sku = SKU
    buyers = 0  # 0: a new buyer each order; N: draw from N buyers

    def post_order(self, **fields: Any) -> dict[str, Any] | None:
        body = {**order(self.sku, buyers=self.buyers), **fields}
        with self.client.post("/v1/orders", json=body, name="/v1/orders",
                              headers={"Authorization": f"Bearer {KEY}"},
                              catch_response=True) as resp:
            if resp.status_code not in ORDER_ANSWERS:
                resp.failure(f"unexpected {resp.status_code}: {resp.text[:200]}")
                return None
            if "RateLimit" not in resp.headers:
                resp.failure("no RateLimit header")
                return None
            resp.success()
            result: dict[str, Any] = resp.json()
            return result


@events.quitting.add_listener
def check_slo(environment: Any, **_: Any) -> None:
    """A run that missed its SLO exits non-zero, so scripts and CI can rely on it."""
    stats = environment.stats.total
    p99 = stats.get_response_time_percentile(0.99) or 0
    if stats.num_requests == 0:
        environment.process_exit_code = 1
        print("SLO: no request was made")
    elif stats.fail_ratio > MAX_FAIL_RATIO or p99 > MAX_P99_MS:
        environment.process_exit_code = 1
        print(f"SLO missed: failure ratio {stats.fail_ratio:.3%} (max {MAX_FAIL_RATIO:.1%}), "
              f"p99 {p99:.0f} ms (max {MAX_P99_MS:.0f} ms)")
    else:
        print(f"SLO met: failure ratio {stats.fail_ratio:.3%}, p99 {p99:.0f} ms")


def report(environment: Any, label: str, problems: list[str], ok: str) -> None:
    """Print a scenario's end-of-run check; any problem fails the run."""
    if problems:
        environment.process_exit_code = 1
        for problem in problems:
            print(f"{label} check failed: {problem}")
    else:
        print(f"{label} check: {ok}")


def at_the_end(finish: Callable[[Any], None]) -> None:
    """Run a scenario's final check when the test stops, and when locust quits early (Ctrl-C:
    the users may still run, so they are stopped first)."""

    @events.test_stop.add_listener
    def on_test_stop(environment: Any, **_: Any) -> None:
        finish(environment)

    @events.quitting.add_listener
    def on_quitting(environment: Any, **_: Any) -> None:
        if environment.runner is not None:
            environment.runner.stop()
        finish(environment)


def call(http: Any, method: str, url: str, headers: dict[str, str],
         **body: Any) -> tuple[int, dict[str, Any]]:
    """One admin call with urllib3 (usable where locust's users have stopped): (status, JSON
    object or {}); status 0 when the engine could not be reached."""
    import urllib3

    try:
        resp = http.request(method, url, timeout=10, retries=False, headers=headers, **body)
    except urllib3.exceptions.HTTPError as exc:
        return 0, {"error": str(exc)}
    try:
        found = resp.json()
    except ValueError:
        found = {}
    return resp.status, found if isinstance(found, dict) else {}
