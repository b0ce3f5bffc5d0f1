"""GCRA state (pure): exact arithmetic and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buttress._state.gcra import EPSILON, Gcra, GcraTable, gcra_take

# -- exact ------------------------------------------------------------------------------------


def test_full_bucket_admits_a_burst_then_rejects_with_the_exact_wait() -> None:
    g = Gcra(rate=4.0, burst=3.0)  # interval 0.25 s, exact in binary
    assert [g.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert g.take(0.0) == 0.25  # rejected: nothing taken
    assert g.take(0.0) == 0.25  # ... so asking again gives the same answer
    assert g.take(0.2499) == pytest.approx(0.0001)
    assert g.take(0.25) == 0.0  # exactly at retry_after: admitted
    assert g.take(0.25) == 0.25


def test_steady_rate_one_permit_per_interval() -> None:
    g = Gcra(rate=2.0, burst=1.0)
    for k in range(100):
        now = k * 0.5
        assert g.take(now) == 0.0
        assert g.take(now) == 0.5


def test_refill_is_capped_at_burst() -> None:
    g = Gcra(rate=1.0, burst=2.0)
    assert g.take(0.0) == 0.0
    assert g.take(0.0) == 0.0
    assert g.available(0.0) == 0.0
    assert g.available(0.5) == 0.5
    assert g.available(1000.0) == 2.0  # a long quiet period refills one burst, not more
    admitted = sum(g.take(1000.0) == 0.0 for _ in range(10))
    assert admitted == 2


def test_max_wait_reserves_in_order_and_rejects_beyond() -> None:
    g = Gcra(rate=2.0, burst=1.0)  # one permit every 0.5 s
    assert g.take(0.0, max_wait=1.0) == 0.0
    assert g.take(0.0, max_wait=1.0) == 0.5  # reserved for t=0.5
    assert g.take(0.0, max_wait=1.0) == 1.0  # reserved for t=1.0
    assert g.take(0.0, max_wait=1.0) == 1.5  # 1.5 > 1.0: rejected, not reserved
    assert g.take(0.0, max_wait=2.0) == 1.5  # with a longer budget: reserved for t=1.5
    assert g.take(1.5, max_wait=0.0) == 0.5  # the reservations hold the bucket until 2.0


def test_multi_permit_costs_and_impossible_costs() -> None:
    g = Gcra(rate=1.0, burst=3.0)
    assert g.take(0.0, permits=2.0) == 0.0
    assert g.take(0.0, permits=2.0) == 1.0
    assert g.take(0.0, permits=4.0, max_wait=100.0) == math.inf  # more than the burst: never
    assert g.take(1.0, permits=2.0) == 0.0  # the impossible request took nothing


def test_float_boundary_at_rate_ten() -> None:
    g = Gcra(rate=10.0, burst=1.0)  # interval 0.1 is not exact in binary
    now = 0.0
    for _ in range(1000):
        assert g.take(now) == 0.0
        now += 0.1
    assert EPSILON == 1e-9


def test_clock_stepping_back_never_locks_out() -> None:
    g = Gcra(rate=1.0, burst=2.0)
    assert g.take(1000.0) == 0.0
    # the clock jumps back by 999 s: treated as the latest reading, not as a huge debt
    assert g.take(1.0) == 0.0
    assert g.take(1.0) == 1.0
    assert g.take(1001.0) == 0.0


def test_clock_stepping_forward_lets_at_most_one_burst_through() -> None:
    g = Gcra(rate=1.0, burst=5.0)
    for _ in range(5):
        g.take(0.0)
    admitted = sum(g.take(1e9) == 0.0 for _ in range(100))
    assert admitted == 5


def test_wait_time_takes_nothing() -> None:
    g = Gcra(rate=4.0, burst=1.0)
    assert g.wait_time(0.0) == 0.0
    assert g.take(0.0) == 0.0
    assert g.wait_time(0.0) == 0.25
    assert g.wait_time(0.0) == 0.25


def test_table_keys_are_independent_and_bounded() -> None:
    t = GcraTable(max_keys=3)
    interval, tolerance = 0.5, 0.5  # rate 2, burst 1
    assert t.take("a", 0.0, 1.0, interval, tolerance, 0.0) == 0.0
    assert t.take("a", 0.0, 1.0, interval, tolerance, 0.0) == 0.5
    assert t.take("b", 0.0, 1.0, interval, tolerance, 0.0) == 0.0
    for k in "cde":
        t.take(k, 0.0, 1.0, interval, tolerance, 0.0)
    assert len(t) == 3
    assert t.evictions == 2
    assert "a" not in t  # least recently used: forgotten, comes back full
    assert t.take("a", 0.0, 1.0, interval, tolerance, 0.0) == 0.0
    assert t.wait_time("a", 0.0, 1.0, interval, tolerance) == 0.5


def test_table_impossible_request_adds_no_key() -> None:
    t = GcraTable(max_keys=3)
    assert t.take("x", 0.0, 5.0, 1.0, 2.0, 10.0) == math.inf
    assert len(t) == 0


# -- properties -------------------------------------------------------------------------------

rates = st.sampled_from([0.1, 0.5, 1.0, 3.0, 4.0, 10.0, 100.0])
bursts = st.sampled_from([1.0, 2.0, 5.0, 20.0])
steps = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=2.0),  # time since the previous request
        st.sampled_from([1.0, 2.0]),  # permits
        st.sampled_from([0.0, 0.0, 0.3, 1.0, math.inf]),  # max_wait
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(rate=rates, burst=bursts, steps=steps)
def test_admitted_permits_never_exceed_burst_plus_rate_times_interval(
    rate: float, burst: float, steps: list[tuple[float, float, float]]
) -> None:
    g = Gcra(rate, burst)
    now = 0.0
    admitted: list[tuple[float, float]] = []  # (admission time, permits)
    for dt, permits, max_wait in steps:
        now += dt
        wait = g.take(now, permits, max_wait)
        assert wait >= 0.0
        if permits > burst:
            assert wait == math.inf
        if wait <= max_wait and wait != math.inf:  # inf: never admissible, even unbounded
            admitted.append((now + wait, permits))
    admitted.sort()
    times = [t for t, _ in admitted]
    for i in range(len(admitted)):
        total = 0.0
        for j in range(i, len(admitted)):
            total += admitted[j][1]
            length = times[j] - times[i]
            assert total <= burst + rate * length + 1e-6, (i, j, total, length)


@settings(max_examples=150, deadline=None)
@given(rate=rates, burst=bursts, steps=steps)
def test_matches_a_reference_token_bucket(
    rate: float, burst: float, steps: list[tuple[float, float, float]]
) -> None:
    """Without waiting, GCRA makes the same decisions as a literal token bucket."""
    g = Gcra(rate, burst)
    tokens = burst
    now = 0.0
    for dt, permits, _ in steps:
        now += dt
        tokens = min(burst, tokens + dt * rate)
        wait = g.take(now, permits, 0.0)
        if abs(tokens - permits) < 1e-6:  # too close to call in floating point
            if wait == 0.0:
                tokens -= permits
            continue
        if tokens >= permits:
            assert wait == 0.0
            tokens -= permits
        else:
            assert wait > 0.0
            if permits <= burst:
                assert wait == pytest.approx((permits - tokens) / rate, abs=1e-6)


@settings(max_examples=100, deadline=None)
@given(rate=rates, burst=bursts, steps=steps)
def test_a_rejected_request_conforms_exactly_at_now_plus_wait(
    rate: float, burst: float, steps: list[tuple[float, float, float]]
) -> None:
    g = Gcra(rate, burst)
    now = 0.0
    for dt, permits, max_wait in steps:
        now += dt
        wait = g.take(now, permits, max_wait)
        if max_wait < wait < math.inf:
            tat = g.tat
            assert gcra_take(tat, now + wait, permits, g.interval, g.tolerance, 0.0)[1] == 0.0
            if wait > 1e-6:
                early = now + wait - 1e-6
                assert gcra_take(tat, early, permits, g.interval, g.tolerance, 0.0)[1] > 0.0
