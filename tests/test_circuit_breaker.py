"""CircuitBreaker: exact transitions, windows, slow calls, break growth, manual control."""

from __future__ import annotations

import math
from typing import Any

import pytest

from buttress import (
    BulkheadFullError,
    CircuitBreaker,
    CircuitIsolatedError,
    CircuitOpenError,
    ConfigurationError,
    Pipeline,
    RateLimitedError,
    TimeoutRejectedError,
    backoff,
    on_result,
)
from buttress.events import CallRejected, CircuitStateChanged
from buttress.testing import ManualClock, RecordingListener


def fail() -> None:
    raise ConnectionError("down")


def ok() -> str:
    return "ok"


def outcome(p: Pipeline, fn: Any) -> Any:
    try:
        return p.call(fn)
    except Exception as exc:
        return exc


def changes(events: RecordingListener) -> list[tuple[float, str, str]]:
    return [(e.time, e.from_state, e.to_state) for e in events.of_type(CircuitStateChanged)]


def make(clock: ManualClock, events: RecordingListener | None = None, **kw: Any) -> Any:
    breaker = CircuitBreaker(**kw)
    p = Pipeline(breaker, clock=clock, listeners=[events] if events is not None else [])
    return breaker, p


# -- consecutive failures and the full cycle ---------------------------------------------


def test_consecutive_failures_full_cycle_exact(
    clock: ManualClock, events: RecordingListener
) -> None:
    b, p = make(clock, events, consecutive_failures=3, failure_ratio=None, break_duration=10.0)
    assert b.state == "closed"
    for _ in range(2):
        assert isinstance(outcome(p, fail), ConnectionError)
    assert b.state == "closed"
    assert b.metrics.consecutive_failures == 2
    clock.advance(1.0)
    assert isinstance(outcome(p, fail), ConnectionError)  # third in a row at t=1
    assert b.state == "open"
    assert changes(events) == [(1.0, "closed", "open")]
    change = events.of_type(CircuitStateChanged)[0]
    assert change.break_duration == 10.0
    assert change.failure_ratio == 1.0
    assert change.strategy == "circuit_breaker"

    calls = []
    clock.advance(4.0)  # t=5: 6 s of break left
    err = outcome(p, lambda: calls.append(1))
    assert isinstance(err, CircuitOpenError)
    assert not isinstance(err, CircuitIsolatedError)
    assert err.retry_after == 6.0
    assert err.strategy == "circuit_breaker"
    assert "retry after 6.000s" in str(err)
    assert calls == []
    rejected = events.of_type(CallRejected)
    assert [(r.time, r.reason, r.retry_after, r.key) for r in rejected] == [
        (5.0, "circuit_open", 6.0, None)
    ]
    clock.advance(5.75)
    err = outcome(p, ok)
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == 0.25
    assert b.metrics.retry_after == 0.25

    clock.advance(0.25)  # t=11: break over; the state reads half_open before any call
    assert b.state == "half_open"
    assert changes(events) == [(1.0, "closed", "open")]  # the transition happens on a call
    assert outcome(p, ok) == "ok"
    assert changes(events) == [
        (1.0, "closed", "open"),
        (11.0, "open", "half_open"),
        (11.0, "half_open", "closed"),
    ]
    assert b.state == "closed"
    assert b.metrics.consecutive_failures == 0


def test_a_success_resets_the_failure_streak(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=2, failure_ratio=None)
    outcome(p, fail)
    outcome(p, ok)
    outcome(p, fail)
    assert b.state == "closed"
    outcome(p, fail)
    assert b.state == "open"


def test_half_open_trial_failure_reopens_with_a_new_break(
    clock: ManualClock, events: RecordingListener
) -> None:
    b, p = make(clock, events, consecutive_failures=1, failure_ratio=None, break_duration=3.0)
    outcome(p, fail)
    clock.advance(3.0)
    assert isinstance(outcome(p, fail), ConnectionError)  # the trial fails at t=3
    assert b.state == "open"
    err = outcome(p, ok)
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == 3.0
    assert changes(events) == [
        (0.0, "closed", "open"),
        (3.0, "open", "half_open"),
        (3.0, "half_open", "open"),
    ]


def test_half_open_rejects_other_callers_while_the_trial_runs(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=1, failure_ratio=None, break_duration=1.0)
    outcome(p, fail)
    clock.advance(1.0)
    inner: list[Any] = []

    def trial() -> str:
        inner.append(outcome(p, ok))  # a second caller while the trial is in flight
        return "trial"

    assert p.call(trial) == "trial"
    assert isinstance(inner[0], CircuitOpenError)
    assert inner[0].retry_after is None
    assert "half-open" in str(inner[0])
    assert b.state == "closed"


def test_half_open_needs_all_trials_by_default(clock: ManualClock) -> None:
    b, p = make(
        clock, consecutive_failures=1, failure_ratio=None, break_duration=1.0, half_open_calls=3
    )
    outcome(p, fail)
    clock.advance(1.0)
    assert outcome(p, ok) == "ok"
    assert outcome(p, ok) == "ok"
    assert b.state == "half_open"
    assert b.metrics.half_open_successes == 2
    assert outcome(p, ok) == "ok"
    assert b.state == "closed"


def test_half_open_success_count_and_early_reopen(clock: ManualClock) -> None:
    b, p = make(
        clock,
        consecutive_failures=1,
        failure_ratio=None,
        break_duration=1.0,
        half_open_calls=3,
        half_open_successes=2,
    )
    outcome(p, fail)
    clock.advance(1.0)
    outcome(p, fail)  # 1 failure: 2 of 3 can still succeed
    assert b.state == "half_open"
    outcome(p, fail)  # 2 failures: closing is impossible -> reopen at once
    assert b.state == "open"
    clock.advance(1.0)
    outcome(p, ok)
    outcome(p, fail)
    assert b.state == "half_open"
    outcome(p, ok)
    assert b.state == "closed"


def test_half_open_success_ratio(clock: ManualClock) -> None:
    b = CircuitBreaker(half_open_calls=10, half_open_success_ratio=0.8)
    assert b.policy.half_open_successes == 8
    b = CircuitBreaker(half_open_calls=3, half_open_success_ratio=2 / 3)
    assert b.policy.half_open_successes == 2
    b = CircuitBreaker(half_open_calls=3, half_open_success_ratio=0.01)
    assert b.policy.half_open_successes == 1


def test_half_open_round_that_hangs_reopens_after_max_duration(
    clock: ManualClock, events: RecordingListener
) -> None:
    b, p = make(
        clock,
        events,
        consecutive_failures=1,
        failure_ratio=None,
        break_duration=2.0,
        half_open_max_duration=30.0,
    )
    outcome(p, fail)
    clock.advance(2.0)
    cell: Any = b._cell
    admission = cell.try_acquire(clock.now())  # a trial that never answers
    assert admission.permitted
    assert admission.trial
    clock.advance(29.0)
    err = outcome(p, ok)
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after is None
    clock.advance(1.0)  # 30 s after the round began
    err = outcome(p, ok)
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after == 2.0
    assert b.state == "open"
    assert changes(events)[-1] == (32.0, "half_open", "open")
    # the hung trial's late answer belongs to an old round: ignored
    snap = cell.record(admission.token, False, 40.0, clock.now())
    assert snap.state == "open"
    assert snap.previous_state is None
    clock.advance(2.0)
    assert outcome(p, ok) == "ok"
    assert b.state == "closed"


# -- ratio windows -------------------------------------------------------------------------


def test_count_window_needs_min_throughput(clock: ManualClock) -> None:
    b, p = make(clock, window=10, min_throughput=10, failure_ratio=0.5)
    for _ in range(5):
        outcome(p, ok)
    for _ in range(4):
        outcome(p, fail)
    assert b.state == "closed"  # 9 calls < min_throughput
    m = b.metrics
    assert (m.calls, m.failures, m.failure_ratio) == (9, 4, 4 / 9)
    outcome(p, fail)  # 10 calls, 5 failed: 0.5 >= 0.5
    assert b.state == "open"


def test_count_window_slides(clock: ManualClock) -> None:
    b, p = make(clock, window=4, min_throughput=4, failure_ratio=0.75)
    for fn in (fail, fail, ok, ok, ok):
        outcome(p, fn)
    m = b.metrics
    assert (m.calls, m.failures) == (4, 1)  # the first failure slid out
    outcome(p, fail)
    outcome(p, fail)  # window: ok ok fail fail -> 0.5
    assert b.state == "closed"
    outcome(p, fail)  # window: ok fail fail fail -> 0.75
    assert b.state == "open"


def test_successes_never_open_the_breaker(clock: ManualClock) -> None:
    # 9 calls, 5 failed, min_throughput 10: the 10th call, a success, does not open
    b, p = make(clock, window=10, min_throughput=10, failure_ratio=0.5)
    for fn in (fail,) * 5 + (ok,) * 4:
        outcome(p, fn)
    outcome(p, ok)
    assert b.state == "closed"
    assert b.metrics.failure_ratio == 0.5
    outcome(p, fail)  # the next failure checks: 6/10 (a success slid out? no: window 10)
    assert b.state == "open"


def test_time_window_drops_old_buckets(clock: ManualClock) -> None:
    b, p = make(clock, window_duration=10.0, window_buckets=10, min_throughput=4)
    outcome(p, fail)  # bucket 0 at t=0
    clock.advance(1.0)
    outcome(p, fail)  # bucket 1
    clock.advance(1.0)
    outcome(p, ok)  # bucket 2
    outcome(p, ok)
    m = b.metrics
    assert (m.calls, m.failures) == (4, 2)
    clock.set(10.0)  # bucket 10: bucket 0 left the window
    m = b.metrics
    assert (m.calls, m.failures) == (3, 1)
    outcome(p, fail)  # 2 of 4 -> 0.5 >= 0.5
    assert b.state == "open"


def test_time_window_forgets_everything_after_a_quiet_period(clock: ManualClock) -> None:
    b, p = make(clock, window_duration=10.0, min_throughput=3)
    outcome(p, fail)
    outcome(p, fail)
    clock.advance(100.0)
    outcome(p, fail)
    assert b.state == "closed"
    assert (b.metrics.calls, b.metrics.failures) == (1, 1)


def test_time_window_batched_successes_land_in_their_bucket(clock: ManualClock) -> None:
    b, p = make(clock, window_duration=2.0, window_buckets=2, min_throughput=1)
    for _ in range(3):
        outcome(p, ok)  # t=0, bucket 0 (fast path)
    clock.advance(1.0)
    outcome(p, ok)  # bucket 1 (first one goes through the lock, rotates)
    outcome(p, ok)
    assert b.metrics.calls == 5
    clock.advance(1.0)  # bucket 2: bucket 0's three successes leave
    assert b.metrics.calls == 2


# -- slow calls ------------------------------------------------------------------------------


def test_slow_calls_open_at_their_own_ratio(clock: ManualClock, events: RecordingListener) -> None:
    b, p = make(
        clock,
        events,
        failure_ratio=None,
        slow_call_duration=1.0,
        slow_call_ratio=0.5,
        window=4,
        min_throughput=4,
    )

    def slow() -> str:
        clock.advance(1.5)
        return "slow"

    def exactly_limit() -> str:
        clock.advance(1.0)  # not longer than the limit: not slow
        return "edge"

    assert p.call(slow) == "slow"
    p.call(exactly_limit)
    p.call(ok)
    assert b.state == "closed"
    m = b.metrics
    assert (m.calls, m.slow_calls, m.failures) == (3, 1, 0)
    p.call(slow)  # 2 of 4 slow
    assert b.state == "open"
    assert b.metrics.slow_ratio == 0.5


def test_a_slow_trial_reopens(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=1, slow_call_duration=1.0, break_duration=1.0)
    outcome(p, fail)
    clock.advance(1.0)

    def slow() -> str:
        clock.advance(2.0)
        return "slow"

    assert p.call(slow) == "slow"
    assert b.state == "open"


def test_slow_failures_count_as_both(clock: ManualClock) -> None:
    b, p = make(clock, slow_call_duration=1.0, window=10, min_throughput=10)

    def slow_fail() -> None:
        clock.advance(2.0)
        raise ConnectionError

    outcome(p, slow_fail)
    m = b.metrics
    assert (m.calls, m.failures, m.slow_calls) == (1, 1, 1)


# -- break duration schedule -------------------------------------------------------------


def test_break_grows_with_consecutive_opens_and_is_capped(clock: ManualClock) -> None:
    b, p = make(
        clock,
        consecutive_failures=1,
        failure_ratio=None,
        break_duration=backoff.exponential(1.0, 2.0, cap=8.0, jitter="none"),
    )
    breaks = []
    for _ in range(5):
        outcome(p, fail)  # opens (first from closed, then each failed trial)
        err = outcome(p, ok)
        breaks.append(err.retry_after)
        clock.advance(err.retry_after)
    assert breaks == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert b.metrics.opens == 5


def test_break_growth_resets_after_a_healthy_period(clock: ManualClock) -> None:
    b, p = make(
        clock,
        consecutive_failures=1,
        failure_ratio=None,
        break_duration=backoff.exponential(1.0, 2.0, cap=60.0, jitter="none"),
        break_reset_after=30.0,
    )
    outcome(p, fail)  # break 1
    clock.advance(1.0)
    outcome(p, fail)  # failed trial: break 2
    clock.advance(2.0)
    assert outcome(p, ok) == "ok"  # closed at t=3
    clock.advance(29.0)
    outcome(p, fail)  # closed only 29 s: keeps growing
    assert outcome(p, ok).retry_after == 4.0
    clock.advance(4.0)
    outcome(p, ok)  # closed at t=36
    clock.advance(30.0)
    outcome(p, fail)  # closed 30 s: the schedule starts over
    assert outcome(p, ok).retry_after == 1.0
    assert b.metrics.opens == 1


def test_timedelta_durations(clock: ManualClock) -> None:
    from datetime import timedelta

    _b, p = make(clock, consecutive_failures=1, break_duration=timedelta(seconds=90))
    outcome(p, fail)
    assert outcome(p, ok).retry_after == 90.0


def test_zero_break_goes_straight_to_half_open(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=1, break_duration=0.0)
    outcome(p, fail)
    assert b.state == "half_open"
    assert outcome(p, ok) == "ok"
    assert b.state == "closed"


# -- manual control ------------------------------------------------------------------------


def test_isolate_close_reset(clock: ManualClock, events: RecordingListener) -> None:
    b, p = make(
        clock,
        events,
        consecutive_failures=1,
        failure_ratio=None,
        break_duration=backoff.exponential(1.0, 2.0, cap=60.0, jitter="none"),
    )
    assert outcome(p, ok) == "ok"  # builds the pipeline: manual changes are reported to it
    b.isolate()
    err = outcome(p, ok)
    assert isinstance(err, CircuitIsolatedError)
    assert isinstance(err, CircuitOpenError)
    assert err.retry_after is None
    assert b.state == "isolated"
    clock.advance(1000.0)
    assert isinstance(outcome(p, ok), CircuitIsolatedError)  # no timer ends isolation
    assert [r.reason for r in events.of_type(CallRejected)] == ["circuit_isolated"] * 2
    b.isolate()  # idempotent: no second event
    b.close()
    assert b.state == "closed"
    assert outcome(p, ok) == "ok"
    assert changes(events) == [(0.0, "closed", "isolated"), (1000.0, "isolated", "closed")]

    outcome(p, fail)  # opens: break 1
    clock.advance(1.0)
    outcome(p, fail)  # break 2, opens == 2
    b.close()  # close keeps the open history
    outcome(p, fail)
    assert outcome(p, ok).retry_after == 4.0
    b.reset()  # reset forgets it
    assert b.state == "closed"
    assert b.metrics.opens == 0
    outcome(p, fail)
    assert outcome(p, ok).retry_after == 1.0


def test_close_clears_the_window(clock: ManualClock) -> None:
    b, p = make(clock, window=10, min_throughput=2)
    outcome(p, ok)
    outcome(p, fail)  # 1/2 -> open
    assert b.state == "open"
    b.close()
    m = b.metrics
    assert (m.state, m.calls, m.failures) == ("closed", 0, 0)


def test_outcome_of_a_call_admitted_before_a_transition_is_ignored(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=2, failure_ratio=None)

    def isolate_then_fail() -> None:
        b.isolate()
        b.close()
        raise ConnectionError

    outcome(p, fail)
    outcome(p, isolate_then_fail)  # admitted in the epoch before close(): not counted
    assert b.state == "closed"
    assert b.metrics.consecutive_failures == 0


# -- what counts as a failure ----------------------------------------------------------------


def test_default_on_counts_exceptions_but_not_other_rejections(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=1)

    def full() -> None:
        raise BulkheadFullError(strategy="bulkhead")

    def limited() -> None:
        raise RateLimitedError(strategy="limiter", retry_after=1.0)

    def timed_out() -> None:
        raise TimeoutRejectedError(strategy="timeout")

    outcome(p, full)
    outcome(p, limited)
    assert b.state == "closed"
    outcome(p, timed_out)
    assert b.state == "open"


def test_unhandled_exceptions_count_neither_way(clock: ManualClock) -> None:
    b, p = make(clock, on=ConnectionError, consecutive_failures=2, failure_ratio=None)

    def other() -> None:
        raise KeyError("x")

    outcome(p, fail)
    assert isinstance(outcome(p, other), KeyError)  # neither success nor failure
    assert b.metrics.consecutive_failures == 1
    assert b.metrics.calls == 1
    outcome(p, fail)
    assert b.state == "open"


def test_result_handles_count_results(clock: ManualClock) -> None:
    b, p = make(clock, on=(ConnectionError, on_result(lambda r: r == 503)), consecutive_failures=2)
    assert p.call(lambda: 503) == 503  # returned, but counted
    assert p.call(lambda: 503) == 503
    assert b.state == "open"


def test_base_exceptions_are_not_failures(clock: ManualClock) -> None:
    b, p = make(clock, consecutive_failures=1)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.call(interrupt)
    assert b.state == "closed"
    assert b.metrics.calls == 0


# -- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter", "fragment"),
    [
        ({"failure_ratio": 0}, "failure_ratio", "(0, 1]"),
        ({"failure_ratio": 1.5}, "failure_ratio", "(0, 1]"),
        ({"failure_ratio": -0.1}, "failure_ratio", "(0, 1]"),
        ({"failure_ratio": math.nan}, "failure_ratio", "(0, 1]"),
        ({"slow_call_ratio": 2, "slow_call_duration": 1}, "slow_call_ratio", "(0, 1]"),
        ({"half_open_success_ratio": 1.01}, "half_open_success_ratio", "(0, 1]"),
        ({"window": 0}, "window", ">= 1"),
        ({"window": 2.5}, "window", ">= 1"),
        ({"window_duration": 0}, "window_duration", "> 0"),
        ({"window_duration": -5}, "window_duration", "> 0"),
        ({"window_duration": 10, "window_buckets": 0}, "window_buckets", ">= 1"),
        ({"min_throughput": 0}, "min_throughput", ">= 1"),
        ({"window": 10, "min_throughput": 11}, "min_throughput", "1..window (10)"),
        ({"consecutive_failures": 0}, "consecutive_failures", ">= 1"),
        ({"half_open_calls": 0}, "half_open_calls", ">= 1"),
        ({"half_open_calls": 2, "half_open_successes": 3}, "half_open_successes", "1..2"),
        ({"break_duration": -1}, "break_duration", ">= 0"),
        ({"break_duration": math.inf}, "break_duration", "finite"),
        ({"break_reset_after": -1}, "break_reset_after", ">= 0"),
        ({"slow_call_duration": -1}, "slow_call_duration", "> 0"),
        ({"slow_call_duration": 0}, "slow_call_duration", "> 0"),
        ({"half_open_max_duration": 0}, "half_open_max_duration", "> 0"),
        ({"half_open_max_duration": -3}, "half_open_max_duration", "> 0"),
        ({"max_keys": 0}, "max_keys", ">= 1"),
        ({"key": "host"}, "key", "callable"),
        ({"store": object()}, "store", "CircuitStore"),
        ({"name": ""}, "name", "non-empty"),
        ({"on": 42}, "on", "exception type"),
        ({"window": 10, "window_duration": 5}, "window_duration", "one of them"),
        (
            {"half_open_calls": 2, "half_open_successes": 1, "half_open_success_ratio": 0.5},
            "half_open_success_ratio",
            "at most one",
        ),
        (
            {"failure_ratio": None, "consecutive_failures": None},
            "failure_ratio",
            "trip condition",
        ),
    ],
)
def test_bad_settings_name_parameter_value_and_range(
    kwargs: dict[str, Any], parameter: str, fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(**kwargs)
    err = info.value
    assert err.parameter == parameter
    assert parameter in str(err)
    assert fragment in str(err)
    assert repr(kwargs[parameter])[:20] in str(err)


def test_repr_mentions_settings() -> None:
    text = repr(CircuitBreaker(consecutive_failures=3, name="db"))
    assert "consecutive_failures=3" in text
    assert "name='db'" in text


def test_default_failure_combines_with_result_handles(clock: ManualClock) -> None:
    from buttress import on_exception

    b, p = make(
        clock,
        on=(on_exception(CircuitBreaker.default_failure), on_result(lambda r: r == 503)),
        consecutive_failures=3,
    )

    def full() -> None:
        raise BulkheadFullError(strategy="bulkhead")

    outcome(p, full)  # still not a failure
    outcome(p, fail)
    p.call(lambda: 503)
    assert b.metrics.consecutive_failures == 2
    outcome(p, fail)
    assert b.state == "open"


def test_saved_state_must_match_the_policy() -> None:
    from buttress._state.circuit import CircuitPolicy, CircuitState

    data = CircuitState(CircuitPolicy(window=5)).to_dict()
    with pytest.raises(ValueError, match="does not match"):
        CircuitState.from_dict(CircuitPolicy(window=6), data)
    with pytest.raises(ValueError, match="does not match"):
        CircuitState.from_dict(CircuitPolicy(window_duration=10), data)
    timed = CircuitState(CircuitPolicy(window_duration=10)).to_dict()
    with pytest.raises(ValueError, match="does not match"):
        CircuitState.from_dict(CircuitPolicy(window_duration=10, window_buckets=5), timed)


def test_break_duration_as_a_function_of_opens(clock: ManualClock) -> None:
    b, p = make(
        clock, consecutive_failures=1, failure_ratio=None, break_duration=lambda n: 10.0 * n
    )
    outcome(p, fail)
    assert outcome(p, ok).retry_after == 10.0
    clock.advance(10.0)
    outcome(p, fail)  # failed trial: second consecutive open
    assert outcome(p, ok).retry_after == 20.0
    assert b.metrics.opens == 2


def test_break_duration_of_the_wrong_type() -> None:
    with pytest.raises(ConfigurationError) as info:
        CircuitBreaker(break_duration="5s")  # type: ignore[arg-type]
    assert info.value.parameter == "break_duration"
    assert "backoff schedule" in str(info.value)
