"""Flash sale (爆单): a quiet start, a spike of buyers, then quiet again. When the run ends it
checks over the admin API that nothing was oversold (issued <= imported, C1 holds) and runs
`kamigate reconcile` when KAMIGATE_CONFIG names the engine's config; either failing fails
the run.

Usage:  locust -f loadtests/flash_sale.py --headless --host http://127.0.0.1:8080
        (the shape sets users and duration; -t is not needed)
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import urllib3
from locust import LoadTestShape, between, events, task

from loadtests.common import ADMIN_KEY, SKU, Buyer


class FlashBuyer(Buyer):
    """A buyer who wants one code now."""

    wait_time = between(0.05, 0.2)

    @task
    def buy(self) -> None:
        self.post_order(wait_ms=2000)


SCALE = float(os.environ.get("KAMIGATE_SHAPE_SCALE", "1"))  # 0.1: the same shape in 3 s


class Spike(LoadTestShape):
    """stages: (until second, users, spawn rate): quiet, spike, quiet."""

    stages = ((5, 10, 10), (20, 300, 300), (30, 10, 100))

    def tick(self) -> tuple[int, float] | None:
        now = self.get_run_time()
        for until, users, rate in self.stages:
            if now < until * SCALE:
                return users, rate
        return None


@events.quitting.add_listener
def check_nothing_oversold(environment: Any, **_: Any) -> None:
    host = environment.host or "http://127.0.0.1:8080"
    resp = urllib3.request("GET", f"{host}/admin/skus/{SKU}",
                           headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
    if resp.status != 200:
        print(f"flash sale check: GET /admin/skus/{SKU} answered {resp.status}")
        environment.process_exit_code = 1
        return
    level = resp.json()
    accounted = level["available"] + level["held"] + level["issued"] + level["voided"]
    if level["issued"] > level["imported"] or accounted != level["imported"]:
        print(f"flash sale check: stock does not add up: {level}")
        environment.process_exit_code = 1
    else:
        print(f"flash sale check: {level['issued']} issued of {level['imported']} imported, "
              f"{level['queued']} waiting; nothing oversold")
    config = os.environ.get("KAMIGATE_CONFIG")
    if config:
        done = subprocess.run([sys.executable, "-m", "engine", "reconcile", "--config", config],
                              capture_output=True, text=True, timeout=300)
        print(done.stdout.strip().splitlines()[-1] if done.stdout else done.stderr.strip())
        if done.returncode != 0:
            environment.process_exit_code = 1
