"""Pure balancers: selection rules, penalties, EWMA arithmetic."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import ConfigurationError
from buttress.routing import (
    Endpoint,
    EndpointState,
    LeastRequest,
    PeakEwma,
    RandomChoice,
    RoundRobin,
)
from buttress.routing.balancers import make_balancer


def states(n: int) -> list[EndpointState]:
    return [EndpointState(Endpoint(f"e{i}")) for i in range(n)]


def test_round_robin_cycles_in_order() -> None:
    s = states(3)
    b = RoundRobin()
    rng = random.Random(1)
    assert [b.pick(s, 0.0, rng).name for _ in range(7)] == [
        "e0", "e1", "e2", "e0", "e1", "e2", "e0",
    ]  # fmt: skip


def test_random_is_roughly_uniform_and_seeded() -> None:
    s = states(4)
    b = RandomChoice()
    counts = Counter(b.pick(s, 0.0, random.Random(7)).name for _ in range(1))
    assert sum(counts.values()) == 1
    rng = random.Random(7)
    counts = Counter(b.pick(s, 0.0, rng).name for _ in range(4000))
    assert all(900 < c < 1100 for c in counts.values())
    a = [b.pick(s, 0.0, random.Random(3)).name for _ in range(5)]
    assert a == [b.pick(s, 0.0, random.Random(3)).name for _ in range(5)]


def test_least_request_never_picks_the_most_loaded_of_a_pair() -> None:
    s = states(2)
    s[0].outstanding = 5
    b = LeastRequest()
    rng = random.Random(2)
    assert {b.pick(s, 0.0, rng).name for _ in range(50)} == {"e1"}


@given(st.lists(st.integers(0, 20), min_size=2, max_size=12), st.integers(0, 2**32))
def test_p2c_never_picks_the_global_maximum_when_unique(loads: list[int], seed: int) -> None:
    s = states(len(loads))
    for state, load in zip(s, loads, strict=True):
        state.outstanding = load
    top = max(loads)
    chosen = LeastRequest().pick(s, 0.0, random.Random(seed))
    if loads.count(top) == 1:
        assert chosen.outstanding < top


def test_penalty_decays_exponentially_and_counts_as_load() -> None:
    b = LeastRequest(failure_penalty=2.0, penalty_decay=10.0)
    s = states(2)
    b.on_start(s[0], 0.0)
    b.on_finish(s[0], 0.0, 0.001, failed=True)
    assert s[0].outstanding == 0
    assert s[0].failure_score(0.0, 10.0) == pytest.approx(2.0)
    assert s[0].failure_score(10.0, 10.0) == pytest.approx(2.0 / math.e)
    s[1].outstanding = 1
    rng = random.Random(0)
    # 2.0 > 1 outstanding: the failing endpoint loses every comparison at t=0
    assert {b.pick(s, 0.0, rng).name for _ in range(20)} == {"e1"}
    # after 10 s: 0.74 < 1: it wins again
    assert {b.pick(s, 10.0, rng).name for _ in range(20)} == {"e0"}


def test_fast_failing_endpoint_does_not_attract_least_request_traffic() -> None:
    """10 endpoints, one fails instantly: its share of picks stays tiny (errors penalised)."""
    b = LeastRequest()
    s = states(10)
    rng = random.Random(5)
    bad = s[0]
    sent = Counter[str]()
    # each healthy call holds for 0.1 s; bad ones end immediately
    inflight: list[tuple[float, EndpointState]] = []
    t = 0.0
    for _ in range(8000):
        t += 0.001
        inflight = [
            (end, st_)
            for end, st_ in inflight
            if not (end <= t and b.on_finish(st_, t, 0.1, False) is None)
        ]
        chosen = b.pick(s, t, rng)
        sent[chosen.name] += 1
        b.on_start(chosen, t)
        if chosen is bad:
            b.on_finish(chosen, t, 0.0005, True)
        else:
            inflight.append((t + 0.1, chosen))
    assert sent["e0"] / 8000 < 0.01
    # without the penalty the fast failer takes a large share
    b2 = LeastRequest(failure_penalty=0)
    s2 = states(10)
    sent2 = Counter[str]()
    inflight = []
    t = 0.0
    for _ in range(5000):
        t += 0.001
        inflight = [
            (end, st_)
            for end, st_ in inflight
            if not (end <= t and b2.on_finish(st_, t, 0.1, False) is None)
        ]
        chosen = b2.pick(s2, t, rng)
        sent2[chosen.name] += 1
        b2.on_start(chosen, t)
        if chosen is s2[0]:
            b2.on_finish(chosen, t, 0.0005, True)
        else:
            inflight.append((t + 0.1, chosen))
    assert sent2["e0"] / 5000 > 0.15


def test_peak_ewma_peak_then_decay() -> None:
    b = PeakEwma(decay=10.0)
    s = EndpointState(Endpoint("a"))
    b.observe(s, 0.0, 0.1)
    assert s.cost == 0.1
    b.observe(s, 1.0, 2.0)  # peak: replaces at once
    assert s.cost == 2.0
    b.observe(s, 11.0, 0.0)  # lower: blended with weight exp(-10/10)
    assert s.cost == pytest.approx(2.0 * math.exp(-1.0))
    # read-side decay towards zero and the (outstanding + 1) factor
    s.outstanding = 1
    assert b.load(s, 21.0) == pytest.approx(s.cost * math.exp(-1.0) * 2)


def test_peak_ewma_prefers_fast_and_probes_unknown_once() -> None:
    b = PeakEwma()
    s = states(2)
    b.on_start(s[0], 0.0)
    b.on_finish(s[0], 0.5, 0.5, False)
    b.on_start(s[1], 0.0)
    b.on_finish(s[1], 0.05, 0.05, False)
    rng = random.Random(1)
    assert {b.pick(s, 1.0, rng).name for _ in range(20)} == {"e1"}
    fresh = states(2)
    b.on_start(fresh[0], 0.0)  # in flight, never answered: heavily loaded
    assert {b.pick(fresh, 0.0, rng).name for _ in range(20)} == {"e1"}


def test_peak_ewma_failure_latency_is_at_least_mean_success_latency() -> None:
    b = PeakEwma()
    s = states(2)
    for i in range(50):
        b.on_start(s[1], i)
        b.on_finish(s[1], i + 0.2, 0.2, False)
    b.on_start(s[0], 100.0)
    b.on_finish(s[0], 100.001, 0.001, True)
    assert s[0].cost == pytest.approx(0.2)
    assert s[0].failure_score(100.001, 10.0) == pytest.approx(1.0)


def test_cancel_releases_without_penalty() -> None:
    b = PeakEwma()
    s = EndpointState(Endpoint("a"))
    b.on_start(s, 0.0)
    b.on_cancel(s, 1.0, 1.0)
    assert s.outstanding == 0
    assert s.penalty == 0.0
    assert s.cost == 1.0


def test_bad_balancer_config() -> None:
    with pytest.raises(ConfigurationError, match="balancer"):
        make_balancer("LoadBalance", "fastest")
    with pytest.raises(ConfigurationError, match="failure_penalty"):
        LeastRequest(failure_penalty=-1)
    with pytest.raises(ConfigurationError, match="decay"):
        PeakEwma(decay=0)
    with pytest.raises(ConfigurationError, match="penalty_decay"):
        PeakEwma(penalty_decay=float("nan"))
    assert isinstance(make_balancer("x", "p2c"), LeastRequest)
    b = RoundRobin()
    assert make_balancer("x", b) is b
