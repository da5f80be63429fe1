"""Steady state: buyers ordering at a constant pace.

Usage:  locust -f loadtests/steady.py --headless -u 100 -r 100 -t 60s --host http://127.0.0.1:8080
"""

from __future__ import annotations

from locust import constant_throughput, task

from loadtests.common import Buyer


class SteadyBuyer(Buyer):
    """One order a second per user, from a new buyer each time."""

    wait_time = constant_throughput(1)

    @task
    def buy(self) -> None:
        self.post_order()
