"""Timeout: async cancellation semantics, scope by position, sync cooperative/thread modes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import trio
import trio.testing

from buttress import (
    ConfigurationError,
    Fallback,
    Pipeline,
    Retry,
    Timeout,
    TimeoutRejectedError,
    backoff,
    current_context,
)
from buttress.events import TimeoutExpired
from buttress.testing import ManualClock, RecordingListener, autojump


async def _advance_until_done(clock: ManualClock, task: asyncio.Future[Any], step: float) -> None:
    """Run ``task`` in virtual time (``step`` unused: autojump goes timer to timer)."""
    try:
        await autojump(clock, task)
    except BaseException:
        pass


# -- asyncio -----------------------------------------------------------------------------


async def test_timeout_is_a_builtin_timeout_error_with_cancellation_chained() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutError) as info:
        await Pipeline(Timeout(0.01)).acall(hang)
    assert isinstance(info.value, TimeoutRejectedError)
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert info.value.timeout == 0.01
    assert info.value.strategy == "timeout"


async def test_fast_call_is_not_affected_and_no_cancellation_leaks() -> None:
    async def quick() -> int:
        return 5

    p = Pipeline(Timeout(0.01))
    for _ in range(100):
        assert await p.acall(quick) == 5
    await asyncio.sleep(0.03)  # timers of finished calls must not cancel this task
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


async def test_expiry_exact_on_manual_clock(clock: ManualClock) -> None:
    events = RecordingListener()
    cancelled_at: list[float] = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled_at.append(clock.now())
            raise

    p = Pipeline(Timeout(2.0), clock=clock, listeners=[events])
    task = asyncio.ensure_future(p.acall(hang))
    await asyncio.sleep(0)
    clock.advance(1.999)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.001)
    with pytest.raises(TimeoutRejectedError):
        await task
    assert cancelled_at == [2.0]
    assert [e.timeout for e in events.of_type(TimeoutExpired)] == [2.0]


async def test_nothing_keeps_running_after_the_timeout_returns() -> None:
    finished = []

    async def slow() -> None:
        await asyncio.sleep(0.05)
        finished.append(True)

    with pytest.raises(TimeoutRejectedError):
        await Pipeline(Timeout(0.005)).acall(slow)
    await asyncio.sleep(0.08)
    assert finished == []


async def test_outer_cancellation_is_not_reported_as_timeout() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(Pipeline(Timeout(60.0)).acall(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outer_timeout_is_not_reported_as_inner_timeout(clock: ManualClock) -> None:
    events = RecordingListener()

    async def hang() -> None:
        await asyncio.Event().wait()

    inner = Pipeline(Timeout(10.0, name="inner"), clock=clock, listeners=[events])
    outer = Pipeline(Timeout(1.0, name="outer"), clock=clock, listeners=[events])

    async def call_inner() -> None:
        await inner.acall(hang)

    task = asyncio.ensure_future(outer.acall(call_inner))
    await _advance_until_done(clock, task, 0.25)
    with pytest.raises(TimeoutRejectedError) as info:
        await task
    assert info.value.strategy == "outer"
    assert [e.strategy for e in events.of_type(TimeoutExpired)] == ["outer"]


async def test_inner_timeout_expiring_first_is_reported_by_inner(clock: ManualClock) -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    inner = Pipeline(Timeout(1.0, name="inner"), clock=clock)
    outer = Pipeline(Timeout(10.0, name="outer"), clock=clock)

    async def call_inner() -> None:
        await inner.acall(hang)

    task = asyncio.ensure_future(outer.acall(call_inner))
    await _advance_until_done(clock, task, 0.25)
    with pytest.raises(TimeoutRejectedError) as info:
        await task
    assert info.value.strategy == "inner"


async def test_timeout_inside_retry_bounds_each_attempt(clock: ManualClock) -> None:
    starts: list[float] = []

    async def hang() -> None:
        starts.append(clock.now())
        await asyncio.Event().wait()

    p = Pipeline(
        Retry(on=TimeoutError, attempts=3, backoff=backoff.constant(0.5)),
        Timeout(1.0),
        clock=clock,
    )
    task = asyncio.ensure_future(p.acall(hang))
    await _advance_until_done(clock, task, 0.25)
    with pytest.raises(TimeoutRejectedError):
        await task
    assert starts == [0.0, 1.5, 3.0]  # each attempt had its own second


async def test_timeout_outside_retry_bounds_the_whole_call(clock: ManualClock) -> None:
    starts: list[float] = []

    async def hang() -> None:
        starts.append(clock.now())
        await asyncio.Event().wait()

    p = Pipeline(
        Timeout(2.0),
        Retry(on=TimeoutError, attempts=10, backoff=backoff.constant(0.5)),
        Timeout(1.0),
        clock=clock,
    )
    task = asyncio.ensure_future(p.acall(hang))
    await _advance_until_done(clock, task, 0.25)
    with pytest.raises(TimeoutRejectedError):
        await task
    # attempt 1: 0..1, wait 0.5, attempt 2 from 1.5; the next wait would pass the
    # outer deadline (2.0) so the retry stops instead of sleeping.
    assert starts == [0.0, 1.5]


async def test_deadline_on_context_and_nested_pipelines_take_the_earlier(
    clock: ManualClock,
) -> None:
    seen: list[float | None] = []

    async def read() -> None:
        ctx = current_context()
        assert ctx is not None
        seen.append(ctx.remaining())

    inner_late = Pipeline(Timeout(30.0), clock=clock)
    inner_early = Pipeline(Timeout(2.0), clock=clock)
    outer = Pipeline(Timeout(5.0), clock=clock)

    async def nested() -> None:
        await read()
        await inner_late.acall(read)
        await inner_early.acall(read)

    await outer.acall(nested)
    assert seen == [5.0, 5.0, 2.0]


async def test_timeout_swallowed_by_the_callee_does_not_leak_a_cancellation(
    clock: ManualClock,
) -> None:
    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return "swallowed"
        return "unreachable"  # pragma: no cover

    p = Pipeline(Timeout(1.0), clock=clock)
    task = asyncio.ensure_future(p.acall(stubborn))
    await asyncio.sleep(0)
    clock.advance(1.0)
    assert await task == "swallowed"
    assert task.cancelling() == 0


async def test_fallback_never_triggered_by_cancellation() -> None:
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    p = Pipeline(Fallback(on=BaseException, value="fallback"), Timeout(60.0))
    task = asyncio.ensure_future(p.acall(hang))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_many_concurrent_timeouts_share_one_timer() -> None:
    async def quick(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def hang(i: int) -> int:
        await asyncio.Event().wait()
        return i  # pragma: no cover

    p = Pipeline(Timeout(0.05))
    results = await asyncio.gather(
        *(p.acall(quick if i % 2 else hang, i) for i in range(1000)), return_exceptions=True
    )
    assert sum(isinstance(r, TimeoutRejectedError) for r in results) == 500
    assert [r for r in results if isinstance(r, int)] == list(range(1, 1000, 2))


# -- trio ----------------------------------------------------------------------------------


def test_trio_timeout_and_outer_cancel() -> None:

    async def hang() -> None:
        await trio.sleep_forever()

    async def main() -> None:
        with pytest.raises(TimeoutRejectedError) as info:
            await Pipeline(Timeout(5.0)).acall(hang)
        assert isinstance(info.value.__cause__, trio.Cancelled)
        # an outer scope's cancellation passes through untouched
        with trio.move_on_after(1.0) as outer:
            await Pipeline(Timeout(5.0)).acall(hang)
        assert outer.cancelled_caught

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_trio_timeout_inside_retry() -> None:

    starts: list[float] = []

    async def hang() -> None:
        starts.append(trio.current_time())
        await trio.sleep_forever()

    async def main() -> None:
        p = Pipeline(
            Retry(on=TimeoutError, attempts=3, backoff=backoff.constant(1.0)), Timeout(2.0)
        )
        with pytest.raises(TimeoutRejectedError):
            await p.acall(hang)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    # the pipeline runs on the system clock, trio on its mock clock: allow the real
    # microseconds that pass between the two readings
    assert [s - starts[0] for s in starts] == pytest.approx([0.0, 3.0, 6.0], abs=1e-3)


# -- sync ----------------------------------------------------------------------------------


def test_sync_cooperative_late_result_is_rejected(clock: ManualClock) -> None:
    def slow() -> str:
        clock.advance(3.0)
        return "late"

    with pytest.raises(TimeoutRejectedError):
        Pipeline(Timeout(2.0), clock=clock).call(slow)


def test_sync_cooperative_in_time_result_is_kept_and_deadline_visible(clock: ManualClock) -> None:
    def work() -> float | None:
        clock.advance(1.0)
        ctx = current_context()
        assert ctx is not None
        return ctx.remaining()

    assert Pipeline(Timeout(2.0), clock=clock).call(work) == 1.0


def test_sync_exception_after_deadline_becomes_timeout(clock: ManualClock) -> None:
    def slow_fail() -> None:
        clock.advance(5.0)
        raise OSError("socket timed out")

    with pytest.raises(TimeoutRejectedError) as info:
        Pipeline(Timeout(2.0), clock=clock).call(slow_fail)
    assert isinstance(info.value.__cause__, OSError)


def test_sync_exception_before_deadline_is_untouched(clock: ManualClock) -> None:
    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        Pipeline(Timeout(2.0), clock=clock).call(fail)


def test_sync_timeout_inside_retry_per_attempt(clock: ManualClock) -> None:
    durations = iter([3.0, 3.0, 0.5])

    def work() -> str:
        clock.advance(next(durations))
        return "ok"

    p = Pipeline(Retry(on=TimeoutError, backoff=backoff.none()), Timeout(1.0), clock=clock)
    assert p.call(work) == "ok"
    assert clock.now() == 6.5


@pytest.mark.realtime
def test_sync_thread_mode_abandons_the_call() -> None:
    release = threading.Event()
    seen: list[Any] = []

    def block() -> str:
        seen.append(current_context())
        release.wait(5)
        return "late"

    start = time.perf_counter()
    with pytest.raises(TimeoutRejectedError):
        Pipeline(Timeout(0.05, mode="thread")).call(block)
    assert time.perf_counter() - start < 1.0
    release.set()
    assert seen and seen[0] is not None  # contextvars were copied into the worker


@pytest.mark.realtime
def test_sync_thread_mode_returns_results_and_exceptions() -> None:
    p = Pipeline(Timeout(5.0, mode="thread"))
    assert p.call(lambda: 3) == 3
    with pytest.raises(KeyError):
        p.call(lambda: {}["missing"])


@pytest.mark.parametrize(
    ("args", "kwargs", "parameter"),
    [
        ((0,), {}, "timeout"),
        ((-1,), {}, "timeout"),
        ((float("nan"),), {}, "timeout"),
        ((float("inf"),), {}, "timeout"),
        (("1s",), {}, "timeout"),
        ((1.0,), {"mode": "pre-emptive"}, "mode"),
    ],
)
def test_invalid_timeout_settings(args: Any, kwargs: Any, parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Timeout(*args, **kwargs)
    assert info.value.parameter == parameter
