"""Flash-sale load on a running kamigate (see README: Load tests).

Usage:
  locust -f loadtests/locustfile.py --headless -u 200 -r 200 -t 30s \
      --host http://127.0.0.1:8080
Environment: KAMIGATE_KEY (storefront bearer key, default the demo's), KAMIGATE_SKU.
"""

from __future__ import annotations

import os

from locust import FastHttpUser, constant_throughput, events, task

from loadtests.payloads import order

KEY = os.environ.get("KAMIGATE_KEY", "demo-shop-key")
SKU = os.environ.get("KAMIGATE_SKU", "steam-cn-100")
MAX_FAIL_RATIO = 0.01
MAX_P99_MS = 250


class Buyer(FastHttpUser):
    """A buyer posting orders at a steady pace; any 5xx or transport error is a failure."""

    wait_time = constant_throughput(5)

    @task
    def buy(self) -> None:
        with self.client.post("/v1/orders", json=order(SKU),
                              headers={"Authorization": f"Bearer {KEY}"},
                              catch_response=True, name="/v1/orders") as resp:
            if resp.status_code in (201, 202, 409, 429):
                resp.success()
            else:
                resp.failure(f"unexpected {resp.status_code}")


@events.quitting.add_listener
def _slo(environment, **_kwargs) -> None:  # type: ignore[no-untyped-def]
    stats = environment.stats.total
    if stats.fail_ratio > MAX_FAIL_RATIO or stats.get_response_time_percentile(0.99) > MAX_P99_MS:
        environment.process_exit_code = 1
