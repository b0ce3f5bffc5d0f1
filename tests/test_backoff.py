"""Backoff schedules: exact values, jitter bounds (property-based), no overflow."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from buttress import ConfigurationError, backoff

JITTERS = ["none", "full", "equal", "decorrelated"]


def delays(schedule: backoff.Backoff, n: int, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    out: list[float] = []
    previous = 0.0
    for attempt in range(1, n + 1):
        previous = schedule.delay(attempt, previous, rng)
        out.append(previous)
    return out


def test_exponential_without_jitter_doubles_to_the_cap() -> None:
    s = backoff.exponential(0.1, 2.0, cap=1.0, jitter="none")
    assert delays(s, 6) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])


def test_linear_and_constant() -> None:
    assert delays(backoff.linear(0.5, 0.25, cap=1.0), 4) == [0.5, 0.75, 1.0, 1.0]
    assert delays(backoff.linear(0.5), 3) == [0.5, 1.0, 1.5]
    assert delays(backoff.constant(2.0), 3) == [2.0, 2.0, 2.0]
    assert delays(backoff.none(), 3) == [0.0, 0.0, 0.0]


def test_full_jitter_is_uniform_below_the_exponential() -> None:
    s = backoff.exponential(1.0, 2.0, cap=100.0)  # default jitter is full
    rng = random.Random(3)
    samples = [s.delay(3, 0.0, rng) for _ in range(5000)]
    assert all(0.0 <= d <= 4.0 for d in samples)
    assert 1.8 < sum(samples) / len(samples) < 2.2


def test_equal_jitter_keeps_half() -> None:
    s = backoff.exponential(1.0, 2.0, cap=100.0, jitter="equal")
    rng = random.Random(3)
    assert all(2.0 <= s.delay(3, 0.0, rng) <= 4.0 for _ in range(1000))


def test_decorrelated_jitter_grows_from_previous() -> None:
    s = backoff.decorrelated(0.1, cap=5.0)
    rng = random.Random(0)
    d = s.delay(1, 0.0, rng)
    assert d == pytest.approx(0.1)  # previous 0: uniform(base, base)
    assert 0.1 <= s.delay(2, 1.0, rng) <= 3.0


def test_seeded_jitter_is_reproducible() -> None:
    s = backoff.exponential()
    assert delays(s, 10, seed=9) == delays(s, 10, seed=9)


@pytest.mark.parametrize("jitter", JITTERS)
def test_attempt_a_million_neither_overflows_nor_errors(jitter: str) -> None:
    s = backoff.exponential(0.1, 2.0, cap=20.0, jitter=jitter)  # type: ignore[arg-type]
    d = s.delay(10**6, 20.0, random.Random(0))
    assert 0.0 <= d <= 20.0


@pytest.mark.parametrize("jitter", JITTERS)
def test_zero_base_means_zero_delay(jitter: str) -> None:
    s = backoff.exponential(0.0, 2.0, cap=10.0, jitter=jitter)  # type: ignore[arg-type]
    assert delays(s, 5) == [0.0] * 5


@given(
    base=st.floats(0.0, 100.0),
    multiplier=st.floats(1.0, 10.0),
    cap=st.floats(0.0, 1000.0),
    jitter=st.sampled_from(JITTERS),
    attempt=st.integers(1, 10**9),
    previous=st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32),
)
def test_delay_always_within_zero_and_cap(
    base: float,
    multiplier: float,
    cap: float,
    jitter: str,
    attempt: int,
    previous: float,
    seed: int,
) -> None:
    s = backoff.exponential(base, multiplier, cap=cap, jitter=jitter)  # type: ignore[arg-type]
    d = s.delay(attempt, previous, random.Random(seed))
    assert 0.0 <= d <= cap


@given(
    first=st.floats(0.0, 100.0),
    step=st.floats(0.0, 100.0),
    cap=st.floats(0.0, 1000.0),
    jitter=st.sampled_from(JITTERS),
    attempt=st.integers(1, 10**9),
)
def test_linear_delay_within_cap(
    first: float, step: float, cap: float, jitter: str, attempt: int
) -> None:
    s = backoff.linear(first, step, cap=cap, jitter=jitter)  # type: ignore[arg-type]
    assert 0.0 <= s.delay(attempt, 0.0, random.Random(0)) <= cap


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: backoff.exponential(-1.0), "base"),
        (lambda: backoff.exponential(float("nan")), "base"),
        (lambda: backoff.exponential(0.1, 0.5), "multiplier"),
        (lambda: backoff.exponential(0.1, float("inf")), "multiplier"),
        (lambda: backoff.exponential(0.1, cap=float("inf")), "cap"),
        (lambda: backoff.exponential(jitter="gaussian"), "jitter"),
        (lambda: backoff.constant(-0.1), "delay"),
        (lambda: backoff.linear(0.1, -1.0), "step"),
    ],
)
def test_invalid_schedules(factory: object, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        factory()  # type: ignore[operator]
    assert info.value.parameter == parameter
    assert "expected" in str(info.value)


def test_subnormal_base_does_not_overflow() -> None:
    s = backoff.exponential(5e-324, 2.0, cap=1000.0, jitter="none")
    for attempt in (1, 500, 1070, 1080, 1100, 10**6):
        assert 0.0 <= s.delay(attempt, 0.0, random.Random(0)) <= 1000.0
