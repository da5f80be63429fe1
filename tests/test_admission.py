"""Token buckets and the admission decision, on an injected clock."""

from __future__ import annotations

import pytest

from engine.controls.token_bucket import TokenBucket
from engine.door.admission import Admission, Verdict
from tests.conftest import make_settings


def test_bucket_grants_burst_then_rate() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.1)
    assert bucket.take(0.05) == pytest.approx(0.05)
    assert bucket.take(0.1) == 0.0
    assert bucket.take(10.0) == 0.0 and bucket.tokens == pytest.approx(2.0)  # capped at burst


def test_admitted_count_follows_the_rate_over_time() -> None:
    bucket = TokenBucket(rate=100, burst=10, now=0.0)
    granted = sum(bucket.take(i / 1000) == 0.0 for i in range(5000))  # 1000 asks/s for 5 s
    assert granted == pytest.approx(10 + 100 * 5, abs=2)


def _admission(**limits: object) -> Admission:
    return Admission(make_settings(limits=limits), now=0.0)


def test_buyer_over_limit_is_limited_not_queued() -> None:
    gate = _admission(per_buyer={"rate": 1, "burst": 2})
    verdicts = [gate.decide(0.0, "shop-a", "card-100", "greedy", None).verdict
                for _ in range(3)]
    assert verdicts == [Verdict.ADMIT, Verdict.ADMIT, Verdict.LIMITED]
    assert gate.decide(0.0, "shop-a", "card-100", "someone-else", None).verdict == Verdict.ADMIT
    limited = gate.decide(0.0, "shop-a", "card-100", "greedy", None)
    assert limited.headers()["Retry-After"] == "1"


def test_ip_limit_applies_across_buyers() -> None:
    gate = _admission(per_ip={"rate": 1, "burst": 1})
    assert gate.decide(0.0, "shop-a", "card-100", "a", "10.0.0.1").verdict == Verdict.ADMIT
    assert gate.decide(0.0, "shop-a", "card-100", "b", "10.0.0.1").verdict == Verdict.LIMITED
    assert gate.decide(0.0, "shop-a", "card-100", "c", "10.0.0.2").verdict == Verdict.ADMIT


def test_ip_limit_is_per_storefront() -> None:
    """One storefront's traffic from an address never exhausts another storefront's buyers
    behind the same address (a mobile carrier's NAT, an office)."""
    gate = _admission(per_ip={"rate": 1, "burst": 1})
    assert gate.decide(0.0, "shop-a", "card-100", "a", "10.0.0.1").verdict == Verdict.ADMIT
    assert gate.decide(0.0, "shop-a", "card-100", "b", "10.0.0.1").verdict == Verdict.LIMITED
    assert gate.decide(0.0, "shop-b", "card-100", "c", "10.0.0.1").verdict == Verdict.ADMIT


def test_abuse_tokens_are_taken_when_capacity_overflows() -> None:
    """A busy shop (capacity empty) does not skip the buyer's own limit: tickets count."""
    gate = _admission(**{"global": {"rate": 0.001, "burst": 1}},
                      per_buyer={"rate": 0.001, "burst": 3})
    verdicts = [gate.decide(0.0, "shop-a", "card-100", "greedy", None).verdict
                for _ in range(6)]
    assert verdicts == [Verdict.ADMIT, Verdict.OVERFLOW, Verdict.OVERFLOW, Verdict.LIMITED,
                        Verdict.LIMITED, Verdict.LIMITED]


def test_capacity_over_budget_overflows_and_takes_nothing() -> None:
    gate = _admission(**{"global": {"rate": 1, "burst": 1}},
                      per_storefront={"rate": 100, "burst": 100})
    assert gate.decide(0.0, "shop-a", "card-100", "a", None).verdict == Verdict.ADMIT
    over = gate.decide(0.0, "shop-a", "card-100", "b", None)
    assert over.verdict == Verdict.OVERFLOW and over.retry_after == pytest.approx(1.0)
    # all or nothing: the storefront bucket lost only the admitted order's token
    assert gate.per_storefront is not None
    assert gate.per_storefront.get("shop-a", 0.0).tokens == pytest.approx(99)


def test_sku_bucket() -> None:
    settings = make_settings(skus=[{"id": "hot", "limit": {"rate": 1, "burst": 1}}])
    gate = Admission(settings, now=0.0)
    assert gate.decide(0.0, "shop-a", "hot", "a", None).verdict == Verdict.ADMIT
    assert gate.decide(0.0, "shop-a", "hot", "b", None).verdict == Verdict.OVERFLOW
    assert gate.decide(1.0, "shop-a", "hot", "c", None).verdict == Verdict.ADMIT


def test_fleet_share_divides_rates() -> None:
    settings = make_settings(limits={"global": {"rate": 100, "burst": 10}})
    gate = Admission(settings, now=0.0, share=0.5)
    admitted = sum(gate.decide(i / 1000, "shop-a", "card-100", f"b{i}", None).verdict
                   == Verdict.ADMIT for i in range(2000))
    assert admitted == pytest.approx(5 + 50 * 2, abs=2)


def test_ratelimit_headers_are_structured_fields() -> None:
    gate = _admission(**{"global": {"rate": 10, "burst": 20}})
    headers = gate.decide(0.0, "shop-a", "card-100", "a", None).headers()
    assert headers["RateLimit-Policy"] == '"orders";q=20;w=1'
    assert headers["RateLimit"].startswith('"orders";r=19;t=')
    assert "Retry-After" not in headers


def test_a_config_change_keeps_the_buckets_it_does_not_change() -> None:
    import msgspec

    from engine.door.admission import Admission, Verdict
    from tests.conftest import make_settings

    before = make_settings(limits={"per_buyer": {"rate": 1, "burst": 2}})
    admission = Admission(before, 0.0)
    for _ in range(2):
        assert admission.decide(0.0, "shop-a", "card-100", "b", None).verdict == Verdict.ADMIT
    assert admission.decide(0.0, "shop-a", "card-100", "b", None).verdict == Verdict.LIMITED
    same_limits = msgspec.structs.replace(before, skus=before.skus[:1])
    after = Admission(same_limits, 0.0).inherit(admission)
    assert after.decide(0.0, "shop-a", "card-100", "b", None).verdict == Verdict.LIMITED
    looser = make_settings(limits={"per_buyer": {"rate": 1, "burst": 5}})
    fresh = Admission(looser, 0.0).inherit(admission)
    assert fresh.decide(0.0, "shop-a", "card-100", "b", None).verdict == Verdict.ADMIT
