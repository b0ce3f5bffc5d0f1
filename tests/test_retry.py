"""Retry: attempts, limits, backoff use, server-directed delays, notes, events, cancellation."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing

from buttress import (
    CircuitOpenError,
    ConfigurationError,
    Pipeline,
    RatioBudget,
    Retry,
    Timeout,
    TokenBucketBudget,
    backoff,
    current_context,
    on_exception,
    on_result,
    scope,
)
from buttress.events import AttemptCompleted, RetryBudgetExhausted, RetryGaveUp, RetryScheduled
from buttress.testing import ManualClock, RecordingListener


class Flaky:
    """Fails ``failures`` times with ``exc`` then returns ``value``; records attempts."""

    def __init__(self, failures: int, exc: BaseException | None = None, value: Any = "ok") -> None:
        self.failures = failures
        self.exc = exc if exc is not None else ConnectionError("reset")
        self.value = value
        self.calls = 0
        self.attempts: list[int] = []
        self.keys: list[str] = []

    def __call__(self) -> Any:
        self.calls += 1
        ctx = current_context()
        assert ctx is not None
        self.attempts.append(ctx.attempt)
        self.keys.append(ctx.idempotency_key)
        if self.calls <= self.failures:
            raise self.exc
        return self.value


def pipe(*strategies: Any, clock: ManualClock, events: RecordingListener | None = None) -> Pipeline:
    return Pipeline(
        *strategies,
        clock=clock,
        random=random.Random(0),
        listeners=[events] if events is not None else [],
    )


def test_default_is_three_attempts_total(clock: ManualClock) -> None:
    f = Flaky(10)
    with pytest.raises(ConnectionError):
        pipe(Retry(on=ConnectionError, budget=None), clock=clock).call(f)
    assert f.calls == 3
    assert f.attempts == [1, 2, 3]


def test_success_after_failures_returns_value_and_sleeps_exact_delays(clock: ManualClock) -> None:
    f = Flaky(2)
    p = pipe(Retry(on=ConnectionError, attempts=5, backoff=backoff.constant(0.5)), clock=clock)
    assert p.call(f) == "ok"
    assert clock.sleeps == [0.5, 0.5]
    assert clock.now() == 1.0


def test_never_sleeps_after_the_last_attempt(clock: ManualClock) -> None:
    f = Flaky(10)
    p = pipe(Retry(on=ConnectionError, attempts=3, backoff=backoff.constant(1.0)), clock=clock)
    with pytest.raises(ConnectionError):
        p.call(f)
    assert clock.sleeps == [1.0, 1.0]  # two waits between three attempts, none after


def test_zero_delay_never_calls_sleep(clock: ManualClock) -> None:
    f = Flaky(2)
    p = pipe(Retry(on=ConnectionError, backoff=backoff.none()), clock=clock)
    assert p.call(f) == "ok"
    assert clock.sleeps == []


def test_unhandled_exception_is_not_retried(clock: ManualClock) -> None:
    f = Flaky(1, exc=KeyError("nope"))
    with pytest.raises(KeyError):
        pipe(Retry(on=ConnectionError), clock=clock).call(f)
    assert f.calls == 1


def test_gives_up_with_the_last_original_exception_and_notes(clock: ManualClock) -> None:
    errors = [ConnectionError("first"), ConnectionError("second"), ConnectionError("third")]
    it = iter(errors)

    def fail() -> None:
        raise next(it)

    p = pipe(Retry(on=ConnectionError, backoff=backoff.constant(0.25)), clock=clock)
    with pytest.raises(ConnectionError) as info:
        p.call(fail)
    assert info.value is errors[2]
    note = "\n".join(info.value.__notes__)
    assert "3 attempt(s)" in note
    assert "0.500s waiting" in note
    assert "attempt limit" in note


def test_max_elapsed_never_starts_a_sleep_that_ends_past_it(clock: ManualClock) -> None:
    f = Flaky(10)
    p = pipe(
        Retry(on=ConnectionError, attempts=100, backoff=backoff.constant(1.0), max_elapsed=2.5),
        clock=clock,
    )
    with pytest.raises(ConnectionError) as info:
        p.call(f)
    assert clock.sleeps == [1.0, 1.0]  # a third sleep would end at 3.0 > 2.5
    assert f.calls == 3
    assert "max_elapsed" in info.value.__notes__[-1]


def test_max_elapsed_counts_time_spent_in_attempts(clock: ManualClock) -> None:
    def slow_fail() -> None:
        clock.advance(1.0)
        raise ConnectionError

    p = pipe(
        Retry(on=ConnectionError, attempts=100, backoff=backoff.constant(0.5), max_elapsed=3.0),
        clock=clock,
    )
    with pytest.raises(ConnectionError):
        p.call(slow_fail)
    # t=1 fail, sleep->1.5, t=2.5 fail, next sleep would end at 3.0 (== limit, allowed),
    # t=4 fail, then 4.5 > 3 stops
    assert clock.sleeps == [0.5, 0.5]
    assert clock.now() == 4.0


def test_timedelta_accepted_for_max_elapsed(clock: ManualClock) -> None:
    r = Retry(on=OSError, max_elapsed=timedelta(milliseconds=1500))
    assert r.max_elapsed == 1.5


def test_predicate_delay_is_a_floor(clock: ManualClock) -> None:
    f = Flaky(1)
    p = pipe(
        Retry(on=on_exception(lambda e: 7.0), backoff=backoff.constant(1.0)),
        clock=clock,
    )
    assert p.call(f) == "ok"
    assert clock.sleeps == [7.0]


def test_backoff_longer_than_server_delay_wins(clock: ManualClock) -> None:
    f = Flaky(1)
    p = pipe(Retry(on=on_exception(lambda e: 0.5), backoff=backoff.constant(2.0)), clock=clock)
    p.call(f)
    assert clock.sleeps == [2.0]


def test_rejected_error_retry_after_is_honoured(clock: ManualClock) -> None:
    f = Flaky(1, exc=CircuitOpenError("open", retry_after=3.0))
    p = pipe(Retry(on=CircuitOpenError, backoff=backoff.constant(0.1)), clock=clock)
    assert p.call(f) == "ok"
    assert clock.sleeps == [3.0]


def test_server_delay_past_max_elapsed_stops_instead_of_waiting_less(clock: ManualClock) -> None:
    f = Flaky(1, exc=CircuitOpenError("open", retry_after=30.0))
    p = pipe(Retry(on=CircuitOpenError, max_elapsed=5.0), clock=clock)
    with pytest.raises(CircuitOpenError):
        p.call(f)
    assert clock.sleeps == []
    assert f.calls == 1


def test_server_delay_past_deadline_stops(clock: ManualClock) -> None:
    f = Flaky(1, exc=CircuitOpenError("open", retry_after=30.0))
    p = pipe(Timeout(10.0), Retry(on=CircuitOpenError), clock=clock)
    with pytest.raises(CircuitOpenError) as info:
        p.call(f)
    assert clock.sleeps == []
    assert "deadline" in info.value.__notes__[-1]


def test_result_handle_retries_and_returns_last_result(clock: ManualClock) -> None:
    results = iter([503, 503, 503])
    p = pipe(Retry(on=on_result(lambda r: r == 503), backoff=backoff.none()), clock=clock)
    assert p.call(lambda: next(results)) == 503


def test_result_handle_success(clock: ManualClock) -> None:
    results = iter([503, 200])
    p = pipe(Retry(on=on_result(lambda r: r >= 500), backoff=backoff.none()), clock=clock)
    assert p.call(lambda: next(results)) == 200


def test_outcome_predicate_sees_results_and_exceptions(clock: ManualClock) -> None:
    seen: list[Any] = []

    def pred(outcome: Any) -> bool:
        seen.append(outcome)
        return outcome.exception is not None or outcome.value == "again"

    values: list[Any] = [ValueError("x"), "again", "done"]

    def fn() -> Any:
        v = values.pop(0)
        if isinstance(v, Exception):
            raise v
        return v

    p = pipe(Retry(on=pred, attempts=5, backoff=backoff.none()), clock=clock)
    assert p.call(fn) == "done"
    assert [o.is_error for o in seen] == [True, False, False]


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), SystemExit(1), GeneratorExit(), asyncio.CancelledError()]
)
def test_base_exceptions_are_never_retried_even_with_catch_all(
    exc: BaseException, clock: ManualClock
) -> None:
    f = Flaky(5, exc=exc)
    for handle in (BaseException, lambda outcome: True):
        f.calls = 0
        with pytest.raises(type(exc)):
            pipe(Retry(on=handle, backoff=backoff.none()), clock=clock).call(f)
        assert f.calls == 1


def test_idempotency_key_is_identical_on_every_attempt(clock: ManualClock) -> None:
    f = Flaky(2)
    pipe(Retry(on=ConnectionError, backoff=backoff.none()), clock=clock).call(f)
    assert len(set(f.keys)) == 1
    assert len(f.keys[0]) == 32  # uuid4 hex


def test_idempotency_key_differs_between_logical_calls(clock: ManualClock) -> None:
    p = pipe(Retry(on=ConnectionError, backoff=backoff.none()), clock=clock)
    f1, f2 = Flaky(1), Flaky(1)
    p.call(f1)
    p.call(f2)
    assert f1.keys[0] != f2.keys[0]


def test_given_idempotency_key_is_used_on_every_attempt(clock: ManualClock) -> None:
    f = Flaky(2)
    with scope(idempotency_key="order-42"):
        pipe(Retry(on=ConnectionError, backoff=backoff.none()), clock=clock).call(f)
    assert f.keys == ["order-42"] * 3


def test_events_describe_every_decision(clock: ManualClock, events: RecordingListener) -> None:
    f = Flaky(10)
    p = pipe(
        Retry(on=ConnectionError, attempts=3, backoff=backoff.constant(1.0), name="r"),
        clock=clock,
        events=events,
    )
    with pytest.raises(ConnectionError):
        p.call(f)
    assert [k for k in events.kinds() if k.startswith("retry.")] == [
        "retry.attempt", "retry.scheduled",
        "retry.attempt", "retry.scheduled",
        "retry.attempt", "retry.gave_up",
    ]  # fmt: skip
    scheduled = events.of_type(RetryScheduled)
    assert [e.delay for e in scheduled] == [1.0, 1.0]
    assert [e.time for e in scheduled] == [0.0, 1.0]
    assert scheduled[0].error_type == "ConnectionError"
    assert events.of_type(AttemptCompleted)[0].outcome == "handled"
    gave_up = events.of_type(RetryGaveUp)[0]
    assert (gave_up.attempts, gave_up.waited, gave_up.reason) == (3, 2.0, "attempts")
    assert all(e.strategy == "r" for e in events if e.kind.startswith("retry."))


def test_raising_listener_does_not_change_the_result(clock: ManualClock) -> None:
    def bad(event: Any) -> None:
        raise RuntimeError("listener bug")

    f = Flaky(1)
    p = Pipeline(Retry(on=ConnectionError, backoff=backoff.none()), clock=clock, listeners=[bad])
    assert p.call(f) == "ok"


# -- budgets -----------------------------------------------------------------------------


def _run_traffic(p: Pipeline, clock: ManualClock, failure_rate: float, n: int, rps: float) -> int:
    """Run ``n`` calls at ``rps`` with the given failure rate; return dependency calls."""
    rng = random.Random(42)
    calls = 0

    def dep() -> str:
        nonlocal calls
        calls += 1
        if rng.random() < failure_rate:
            raise ConnectionError
        return "ok"

    for _ in range(n):
        try:
            p.call(dep)
        except ConnectionError:
            pass
        clock.advance(1.0 / rps)
    return calls


def test_ratio_budget_refuses_retries_under_total_failure(clock: ManualClock) -> None:
    budget = RatioBudget(0.1, min_retries_per_second=10, window=10)
    p = pipe(Retry(on=ConnectionError, backoff=backoff.none(), budget=budget), clock=clock)
    calls = _run_traffic(p, clock, failure_rate=1.0, n=20_000, rps=1000)
    amplification = calls / 20_000
    # 10% of requests + 10/s floor over 20 s = 0.1 + 200/20000 = 0.11, plus the initial reserve
    assert 1.09 <= amplification <= 1.13


def test_ratio_budget_still_retries_a_one_percent_failure_rate(clock: ManualClock) -> None:
    budget = RatioBudget(0.1, min_retries_per_second=10, window=10)
    events = RecordingListener()
    p = pipe(
        Retry(on=ConnectionError, backoff=backoff.none(), budget=budget), clock=clock, events=events
    )
    _run_traffic(p, clock, failure_rate=0.01, n=20_000, rps=1000)
    assert events.of_type(RetryBudgetExhausted) == []
    assert len(events.of_type(RetryScheduled)) > 150


def test_token_bucket_budget_allows_100_retries_then_stops(clock: ManualClock) -> None:
    budget = TokenBucketBudget()  # AWS standard: 500 tokens, 5 per retry
    p = pipe(
        Retry(on=ConnectionError, attempts=2, backoff=backoff.none(), budget=budget), clock=clock
    )
    calls = _run_traffic(p, clock, failure_rate=1.0, n=1000, rps=100)
    assert calls == 1000 + 100


def test_token_bucket_refunds_on_success(clock: ManualClock) -> None:
    budget = TokenBucketBudget(capacity=10, retry_cost=5, success_refund=1)
    assert budget.try_withdraw(0.0)
    assert budget.try_withdraw(0.0)
    assert not budget.try_withdraw(0.0)
    budget.record_retry_success()
    assert budget.level(0.0) == 5
    for _ in range(3):
        budget.record_first_try(True)
    assert budget.level(0.0) == 8
    for _ in range(10):
        budget.record_first_try(True)
    assert budget.level(0.0) == 10  # capped


def test_timeout_retries_cost_more_in_the_token_bucket() -> None:
    budget = TokenBucketBudget(capacity=20, retry_cost=5, timeout_cost=10)
    assert budget.try_withdraw(0.0, timeout=True)
    assert budget.try_withdraw(0.0, timeout=True)
    assert not budget.try_withdraw(0.0)


def test_exhausted_budget_raises_last_error_with_note_and_event(clock: ManualClock) -> None:
    budget = TokenBucketBudget(capacity=1, retry_cost=5)
    events = RecordingListener()
    f = Flaky(5)
    p = pipe(Retry(on=ConnectionError, budget=budget), clock=clock, events=events)
    with pytest.raises(ConnectionError) as info:
        p.call(f)
    assert f.calls == 1
    assert "budget" in info.value.__notes__[-1]
    assert len(events.of_type(RetryBudgetExhausted)) == 1


def test_a_budget_is_shared_across_pipelines(clock: ManualClock) -> None:
    budget = TokenBucketBudget(capacity=10, retry_cost=5)
    a = pipe(Retry(on=ConnectionError, backoff=backoff.none(), budget=budget), clock=clock)
    b = pipe(Retry(on=ConnectionError, backoff=backoff.none(), budget=budget), clock=clock)
    fa, fb = Flaky(10), Flaky(10)
    with pytest.raises(ConnectionError):
        a.call(fa)
    with pytest.raises(ConnectionError):
        b.call(fb)
    assert fa.calls + fb.calls == 2 + 2  # 2 retries in total, shared


def test_ratio_budget_recovers_over_time() -> None:
    budget = RatioBudget(0.0, min_retries_per_second=1.0, window=10.0)
    granted = sum(budget.try_withdraw(0.0) for _ in range(50))
    assert granted == 10  # the reserve: 1/s * 10 s
    assert not budget.try_withdraw(0.0)
    assert budget.try_withdraw(5.0)  # the floor refills ~1 per second (decayed)


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"attempts": 0}, "attempts"),
        ({"attempts": 1.5}, "attempts"),
        ({"attempts": True}, "attempts"),
        ({"max_elapsed": -1}, "max_elapsed"),
        ({"max_elapsed": float("nan")}, "max_elapsed"),
        ({"backoff": "fast"}, "backoff"),
        ({"budget": 0.1}, "budget"),
        ({"on": "ConnectionError"}, "on"),
        ({"on": 42}, "on"),
        ({"on": ()}, "on"),
        ({"on": None}, "on"),
    ],
)
def test_invalid_settings_raise_configuration_error(kwargs: dict[str, Any], parameter: str) -> None:
    kwargs = {"on": OSError, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        Retry(**kwargs)
    assert info.value.parameter == parameter
    assert parameter in str(info.value)
    assert "expected" in str(info.value)


def test_on_is_required() -> None:
    with pytest.raises(TypeError):
        Retry()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("factory", "parameter"),
    [
        (lambda: RatioBudget(1.5), "ratio"),
        (lambda: RatioBudget(-0.1), "ratio"),
        (lambda: RatioBudget(0.1, window=0), "window"),
        (lambda: RatioBudget(0.1, min_retries_per_second=-1), "min_retries_per_second"),
        (lambda: TokenBucketBudget(0), "capacity"),
        (lambda: TokenBucketBudget(retry_cost=float("nan")), "retry_cost"),
    ],
)
def test_invalid_budgets(factory: Any, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        factory()
    assert info.value.parameter == parameter


# -- async and cancellation -------------------------------------------------------------------


async def test_async_retry_with_manual_clock(clock: ManualClock) -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(current_context().attempt)  # type: ignore[union-attr]
        if len(attempts) < 3:
            raise ConnectionError
        return "ok"

    p = pipe(Retry(on=ConnectionError, backoff=backoff.constant(2.0)), clock=clock)
    assert await p.acall(flaky) == "ok"
    assert attempts == [1, 2, 3]
    assert clock.now() == 4.0


async def test_cancellation_during_a_call_propagates_at_once() -> None:
    started = asyncio.Event()
    calls = 0

    async def hang() -> None:
        nonlocal calls
        calls += 1
        started.set()
        await asyncio.Event().wait()

    p = Pipeline(Retry(on=BaseException, backoff=backoff.none()))
    task = asyncio.ensure_future(p.acall(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


async def test_cancellation_during_backoff_sleep_propagates_with_no_further_attempt() -> None:
    calls = 0

    async def fail() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    p = Pipeline(Retry(on=ConnectionError, backoff=backoff.constant(3600.0)))
    task = asyncio.ensure_future(p.acall(fail))
    for _ in range(5):
        await asyncio.sleep(0)
    assert calls == 1  # now sleeping for an hour
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == 1


def test_trio_retry() -> None:

    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(current_context().attempt)  # type: ignore[union-attr]
        if len(attempts) < 3:
            raise ConnectionError
        return "ok"

    async def main() -> str:
        p = Pipeline(Retry(on=ConnectionError, backoff=backoff.constant(10.0)))
        return await p.acall(flaky)

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == "ok"
    assert attempts == [1, 2, 3]
