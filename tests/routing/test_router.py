"""Router: tiers with hysteresis, panic, zones, avoidance, events."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress import ConfigurationError
from buttress.events import EndpointEjected, EndpointReadmitted, PriorityChanged
from buttress.routing import (
    Endpoint,
    MembershipError,
    NoEndpointAvailableError,
    OutlierDetector,
    Router,
)


def zoned(zones: int = 3, per: int = 4) -> list[Endpoint]:
    return [Endpoint(f"{z}-{i}", zone=z) for z in ("a", "b", "c")[:zones] for i in range(per)]


def test_zone_local_when_healthy_and_cross_zone_share() -> None:
    r = Router(zoned(), zone="a", balancer="round_robin")
    rng = random.Random(1)
    picks = [r.pick(0.0, rng) for _ in range(100)]
    assert {p.zone for p in picks} == {"a"}
    assert r.cross_zone_share == 0.0


def test_zone_spills_in_proportion_below_threshold() -> None:
    r = Router(zoned(), zone="a", balancer="random", zone_threshold=0.7)
    for s in r.states[:2]:  # a-0, a-1 down: local share 0.5 < 0.7
        s.healthy = False
    r.tick(0.0)
    rng = random.Random(2)
    n = 20000
    zones = Counter(r.pick(0.0, rng).zone for _ in range(n))
    # local keeps (2/10) / (4/12) = 0.6 of the traffic
    assert zones["a"] / n == pytest.approx(0.6, abs=0.02)
    assert zones["b"] / n == pytest.approx(0.2, abs=0.02)
    assert r.cross_zone_share == pytest.approx(0.4, abs=0.02)
    for s in r.states[:4]:
        s.healthy = False
    r.tick(0.0)
    assert {r.pick(0.0, rng).zone for _ in range(200)} == {"b", "c"}


def test_zone_above_threshold_stays_local() -> None:
    r = Router(zoned(), zone="a", balancer="random", zone_threshold=0.7)
    r.states[0].healthy = False  # 3/4 = 0.75 >= 0.7
    r.tick(0.0)
    rng = random.Random(3)
    picks = {r.pick(0.0, rng).name for _ in range(200)}
    assert picks == {"a-1", "a-2", "a-3"}


def tiered() -> list[Endpoint]:
    return [Endpoint(f"p{i}", priority=0) for i in range(4)] + [
        Endpoint(f"dr{i}", priority=1) for i in range(4)
    ]


def test_priority_failover_and_failback_with_hysteresis() -> None:
    r = Router(
        tiered(),
        balancer="round_robin",
        failover_threshold=0.5,
        failback_threshold=0.75,
        failback_delay=10.0,
    )
    rng = random.Random(0)
    assert r.pick(0.0, rng).priority == 0
    for s in r.states[:3]:
        r.set_health(s, False, 1.0)  # 1/4 healthy < 0.5
    assert r.pick(1.0, rng).priority == 1
    moves = [p for p in r.pending if p[0] is PriorityChanged]
    assert moves[-1][1]["from_priority"] == 0
    assert moves[-1][1]["to_priority"] == 1
    assert moves[-1][1]["healthy_share"] == 0.25
    r.set_health(r.states[0], True, 2.0)  # 2/4 = 0.5: enough to stay, not to come back
    assert r.pick(2.0, rng).priority == 1
    r.set_health(r.states[1], True, 3.0)  # 3/4 >= 0.75: come back after 10 s
    assert r.pick(3.0, rng).priority == 1
    assert r.pick(12.9, rng).priority == 1
    r.set_health(r.states[1], False, 13.0)  # dips: the delay restarts
    r.pick(13.0, rng)
    r.set_health(r.states[1], True, 14.0)
    assert r.pick(14.0, rng).priority == 1
    assert r.pick(23.9, rng).priority == 1
    assert r.pick(24.0, rng).priority == 0
    assert [p[1]["to_priority"] for p in r.pending if p[0] is PriorityChanged] == [1, 0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 7), st.booleans()), max_size=40))
def test_tier_never_flaps_faster_than_failback_delay(flips: list[tuple[int, bool]]) -> None:
    r = Router(tiered(), balancer="random", failback_delay=5.0)
    rng = random.Random(0)
    last_change = 0.0
    for i, (idx, ok) in enumerate(flips):
        t = float(i)
        r.set_health(r.states[idx], ok, t)
        before = r.tier
        left_share = sum(s.available for s in r.states if s.priority == before) / 4
        r.pick(t, rng)
        if r.tier < before and left_share >= r.failover_threshold:
            # a fail-back away from a tier that still qualifies waits failback_delay
            assert t - last_change >= 5.0
        if r.tier != before:
            last_change = t


def test_panic_spreads_over_all_when_too_few_healthy() -> None:
    r = Router([f"e{i}" for i in range(4)], balancer="round_robin", panic_threshold=0.5)
    for s in r.states[:3]:
        s.healthy = False
    r.tick(0.0)
    assert r.panic
    rng = random.Random(0)
    assert {r.pick(0.0, rng).name for _ in range(8)} == {"e0", "e1", "e2", "e3"}
    r2 = Router([f"e{i}" for i in range(4)], balancer="round_robin", panic_threshold=0.0)
    for s in r2.states:
        s.healthy = False
    with pytest.raises(NoEndpointAvailableError):
        r2.pick(0.0, rng)


def test_avoid_prefers_untried_then_any_healthy_then_anything() -> None:
    r = Router(zoned(zones=2, per=2), zone="a", balancer="round_robin")
    rng = random.Random(0)
    a0, a1, b0, b1 = r.states
    assert {r.pick(0.0, rng, avoid=[a0]).name for _ in range(4)} == {"a-1"}
    assert {r.pick(0.0, rng, avoid=[a0, a1]).name for _ in range(4)} == {"b-0", "b-1"}
    assert r.pick(0.0, rng, avoid=[a0, a1, b0, b1]).zone == "a"


def test_outlier_ejection_and_readmission_events() -> None:
    r = Router(
        ["x", "y", "z"],
        balancer="round_robin",
        outlier=OutlierDetector(consecutive_failures=2, base_ejection_time=5),
    )
    rng = random.Random(0)
    x = r.state("x")
    for _ in range(2):
        r.start(x, 0.0)
        r.finish(x, 0.1, 0.1, True)
    assert r.pending[0][0] is EndpointEjected
    assert r.pending[0][1]["reason"] == "consecutive_failures"
    assert "x" not in {r.pick(1.0, rng).name for _ in range(6)}
    r.pick(5.1, rng)
    assert r.pending[-1] == (EndpointReadmitted, {"time": 5.1, "endpoint": "x"})
    assert "x" in {r.pick(5.2, rng).name for _ in range(6)}


def test_membership_update_keeps_stats() -> None:
    r = Router(["x", "y"])
    r.state("x").outstanding = 3
    r.set_endpoints([Endpoint("x"), Endpoint("w")])
    assert r.state("x").outstanding == 3
    with pytest.raises(KeyError):
        r.state("y")


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"zone_threshold": -0.1}, "zone_threshold"),
        ({"panic_threshold": 1.1}, "panic_threshold"),
        ({"failover_threshold": 0}, "failover_threshold"),
        ({"failover_threshold": 0.8, "failback_threshold": 0.5}, "failback_threshold"),
        ({"failback_delay": -1}, "failback_delay"),
        ({"balancer": "best"}, "balancer"),
        ({"outlier": "yes"}, "outlier"),
        ({"zone": 3}, "zone"),
    ],
)
def test_bad_router_config(kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Router(["a"], **kwargs)  # type: ignore[arg-type]
    assert info.value.parameter == param


def test_empty_and_duplicate_membership() -> None:
    with pytest.raises(MembershipError):
        Router([])
    with pytest.raises(MembershipError, match="duplicate"):
        Router(["a", Endpoint("b"), Endpoint("x", name="a")])
