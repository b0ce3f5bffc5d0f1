"""The pipeline-level call step: CallStarted/CallCompleted only when listeners exist."""

from __future__ import annotations

import asyncio

import pytest

from buttress import Pipeline, Retry, TimeoutRejectedError, add_listener, remove_listener
from buttress._core.gauges import gauge_readings
from buttress.events import CallCompleted, CallStarted
from buttress.testing import ManualClock, RecordingListener


def test_no_listener_means_no_call_step(clock: ManualClock) -> None:
    pipeline = Pipeline(Retry(on=ValueError, budget=None), clock=clock)
    pipeline.call(lambda: 1)
    assert pipeline._sync_chain is pipeline._sync_inner


def test_call_completed_reports_duration_and_outcome(clock: ManualClock) -> None:
    events = RecordingListener()
    pipeline = Pipeline(name="p", clock=clock, listeners=[events])

    def slow() -> int:
        clock.advance(0.25)
        return 7

    assert pipeline.call(slow) == 7
    started, completed = events.of_type(CallStarted), events.of_type(CallCompleted)
    assert len(started) == 1
    assert completed[0].duration == pytest.approx(0.25)
    assert completed[0].outcome == "success"
    assert completed[0].error_type is None

    with pytest.raises(KeyError):
        pipeline.call(lambda: {}["x"])
    assert events.of_type(CallCompleted)[-1].outcome == "error"
    assert events.of_type(CallCompleted)[-1].error_type == "KeyError"

    def rejected() -> None:
        raise TimeoutRejectedError("late", strategy="t", timeout=1.0)

    with pytest.raises(TimeoutRejectedError):
        pipeline.call(rejected)
    last = events.of_type(CallCompleted)[-1]
    assert last.outcome == "timeout"
    assert last.error_type == "buttress.TimeoutRejectedError"


def test_global_listener_rewraps_and_unwraps_existing_pipeline(clock: ManualClock) -> None:
    pipeline = Pipeline(name="late", clock=clock)
    pipeline.call(lambda: 1)
    events = RecordingListener()
    add_listener(events)
    try:
        pipeline.call(lambda: 1)
        assert [e.kind for e in events] == ["pipeline.started", "pipeline.completed"]
    finally:
        remove_listener(events)
    pipeline.call(lambda: 1)
    assert len(events) == 2
    assert pipeline._sync_chain is pipeline._sync_inner


def test_async_call_and_cancellation_are_reported(clock: ManualClock) -> None:
    events = RecordingListener()
    pipeline = Pipeline(name="a", clock=clock, listeners=[events])

    async def ok() -> int:
        return 3

    async def main() -> None:
        assert await pipeline.acall(ok) == 3
        task = asyncio.ensure_future(pipeline.acall(asyncio.sleep, 10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    outcomes = [e.outcome for e in events.of_type(CallCompleted)]
    assert outcomes == ["success", "cancelled"]


def test_retry_budget_is_exposed_as_gauge(clock: ManualClock) -> None:
    retry = Retry(on=ValueError, name="r")
    pipeline = Pipeline(retry, name="gauged", clock=clock)
    pipeline.call(lambda: 1)
    mine = [r for r in gauge_readings() if r[2]["pipeline"] == "gauged"]
    assert mine == [
        (
            "buttress.retry.budget.level",
            pytest.approx(100.1),
            {"pipeline": "gauged", "strategy": "r-budget"},
        )
    ]
