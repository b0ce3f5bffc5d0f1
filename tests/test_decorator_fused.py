"""The decorator fuses its wrapper with an outermost `Retry`/`Timeout` (one coroutine layer
less per call): the fused path must behave exactly like `acall`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress import Pipeline, Retry, Timeout, TimeoutRejectedError, backoff, current_context, scope
from buttress.events import CallCompleted, CallStarted, RetryScheduled, TimeoutExpired
from buttress.testing import ManualClock, RecordingListener, autojump


async def test_fused_timeout_publishes_deadline_and_restores_context() -> None:
    clock = ManualClock(100.0)
    seen: list[Any] = []
    p = Pipeline(Timeout(2.0), clock=clock, name="fused")

    @p
    async def work(x: int) -> int:
        ctx = current_context()
        assert ctx is not None
        seen.append((ctx.operation_key, ctx.deadline, ctx.remaining(), ctx.attempt))
        return x * 2

    assert work.__name__ == "work"
    assert await work(21) == 42
    assert seen == [("fused", 102.0, 2.0, 1)]
    assert current_context() is None


async def test_fused_timeout_expires_with_cancellation_chained() -> None:
    clock, events = ManualClock(), RecordingListener()
    p = Pipeline(Timeout(3.0), clock=clock)

    @p
    async def hang() -> None:
        await asyncio.Event().wait()

    with pytest.raises(TimeoutRejectedError) as info:
        await autojump(clock, hang())
    assert isinstance(info.value.__cause__, asyncio.CancelledError)
    assert clock.now() == 3.0
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    # with a listener installed the decorator takes the generic (telemetry) path
    p.env._own = (events,)
    p.env._refresh()
    with pytest.raises(TimeoutRejectedError):
        await autojump(clock, hang())
    kinds = [type(e) for e in events.events]
    assert kinds[0] is CallStarted and kinds[-1] is CallCompleted
    assert TimeoutExpired in kinds


async def test_fused_timeout_inherits_earlier_outer_deadline() -> None:
    clock = ManualClock()
    p = Pipeline(Timeout(10.0), clock=clock)

    @p
    async def deadline() -> float | None:
        ctx = current_context()
        assert ctx is not None
        return ctx.deadline

    with scope(timeout=4.0, clock=clock):
        assert await deadline() == 4.0
    assert await deadline() == 10.0


async def test_fused_timeout_outer_cancel_is_not_a_timeout() -> None:
    p = Pipeline(Timeout(10.0))
    started = asyncio.Event()

    @p
    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.ensure_future(hang())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_fused_retry_retries_with_context_attempts() -> None:
    clock, events = ManualClock(), RecordingListener()
    attempts: list[int] = []
    p = Pipeline(Retry(on=OSError, backoff=backoff.constant(1.5), budget=None), clock=clock)

    @p
    async def flaky() -> str:
        ctx = current_context()
        assert ctx is not None
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise OSError("down")
        return "ok"

    assert await flaky() == "ok"
    assert attempts == [1, 2, 3]
    assert clock.now() == 3.0
    assert current_context() is None
    p2 = Pipeline(
        Retry(on=OSError, backoff=backoff.none(), budget=None), clock=clock, listeners=[events]
    )
    attempts.clear()
    assert await p2(flaky.__wrapped__)() == "ok"  # type: ignore[attr-defined]
    assert len(events.of_type(RetryScheduled)) == 2


async def test_subclass_overriding_build_async_keeps_generic_path() -> None:
    calls: list[str] = []

    class LoudRetry(Retry):
        def build_async(self, next_step: Any, env: Any) -> Any:
            step = super().build_async(next_step, env)

            async def loud(fn: Any, args: Any, kwargs: Any) -> Any:
                calls.append("loud")
                return await step(fn, args, kwargs)

            return loud

    @Pipeline(LoudRetry(on=OSError))
    async def ok() -> int:
        return 1

    assert await ok() == 1
    assert calls == ["loud"]


async def test_decorating_an_async_callable_object_takes_the_async_path() -> None:
    class Flaky:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self) -> str:
            self.calls += 1
            if self.calls < 2:
                raise OSError("down")
            return "ok"

    target = Flaky()
    wrapped = Pipeline(Retry(on=OSError, backoff=backoff.none(), budget=None))(target)
    assert asyncio.iscoroutinefunction(wrapped)
    assert await wrapped() == "ok"
    assert target.calls == 2


def test_fused_sync_retry_retries_and_restores_context() -> None:
    clock, events = ManualClock(), RecordingListener()
    attempts: list[int] = []
    p = Pipeline(Retry(on=OSError, backoff=backoff.constant(2.0), budget=None), clock=clock)

    def flaky(x: int) -> int:
        ctx = current_context()
        assert ctx is not None
        attempts.append(ctx.attempt)
        if len(attempts) < 3:
            raise OSError("down")
        return x

    wrapped = p(flaky)
    assert wrapped.__name__ == "flaky"
    assert wrapped(7) == 7
    assert attempts == [1, 2, 3]
    assert clock.sleeps == [2.0, 2.0]
    assert current_context() is None
    p.env._own = (events,)
    p.env._refresh()
    attempts.clear()
    assert wrapped(8) == 8
    kinds = [type(e) for e in events.events]
    assert kinds[0] is CallStarted and kinds[-1] is CallCompleted
    assert kinds.count(RetryScheduled) == 2


def test_fused_sync_build_error_still_reported_on_first_call() -> None:
    from buttress import ConfigurationError, Fallback

    async def handler(outcome: Any, ctx: Any) -> int:
        return 0

    p = Pipeline(Retry(on=OSError), Fallback(on=OSError, handler=handler))

    @p  # decoration itself does not fail
    def f() -> int:
        return 1

    with pytest.raises(ConfigurationError):
        f()
