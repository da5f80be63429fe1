"""Abusive buyers: a few buyers ordering as fast as they can beside ordinary ones. The
abusers must get 429 (counted as success: that is the engine doing its job) while ordinary
buyers keep being served; the run fails when ordinary buyers see failures.

Usage:  locust -f loadtests/abusive.py --headless -u 60 -r 60 -t 30s --host http://127.0.0.1:8080
(needs [limits] per_buyer in the engine's config; the demo config has none)
"""

from __future__ import annotations

from locust import constant, constant_throughput, task

from loadtests.common import Buyer


class Abuser(Buyer):
    """One of five buyer ids, ordering without pause."""

    weight = 1
    buyers = 5
    wait_time = constant(0)

    @task
    def hammer(self) -> None:
        self.post_order(wait_ms=0)


class Ordinary(Buyer):
    """A new buyer each order, once a second."""

    weight = 5
    wait_time = constant_throughput(1)

    @task
    def buy(self) -> None:
        self.post_order(wait_ms=0)
