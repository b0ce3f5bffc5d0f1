"""The asyncio `DeadlineLane` behind `Timeout`: exact expiry, concurrency, bounded memory.

`Timeout` takes its general entry path (a runtime lookup per call) while the lab's
simulator module is loaded; the ``lanes`` fixture pins what the check sees, so both the
inlined lane path and the general one run. Both queue on the same `DeadlineLane`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from buttress import Pipeline, Timeout, TimeoutRejectedError, current_context
from buttress._runtime import asyncio_rt
from buttress._strategies import timeout as timeout_mod
from buttress.testing import ManualClock, autojump


class Lanes:
    """Every lane cache `enter_lane` saw, and how often it was called."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.caches: list[Any] = []
        self.calls = 0


@pytest.fixture(params=["inlined", "general"])
def lanes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Lanes:
    # the entry paths test sys.modules for the lab's simulator: pin what they see, so the
    # mode does not depend on which tests imported the simulator before
    if request.param == "inlined":
        monkeypatch.setattr(timeout_mod, "_modules", {})
    else:
        monkeypatch.setattr(timeout_mod, "_modules", {timeout_mod._SIM_MODULE: None})
    seen = Lanes(request.param)
    real = asyncio_rt.enter_lane

    def spy(cache: list[Any], *args: Any) -> list[Any]:
        seen.calls += 1
        if not any(c is cache for c in seen.caches):
            seen.caches.append(cache)
        return real(cache, *args)

    monkeypatch.setattr(timeout_mod, "enter_lane", spy)
    return seen


def lane_of(lanes: Lanes) -> asyncio_rt.DeadlineLane:
    (cache,) = lanes.caches
    lane = cache[0]
    assert isinstance(lane, asyncio_rt.DeadlineLane)
    return lane


async def test_expiry_is_exact_and_the_lane_drains(clock: ManualClock, lanes: Lanes) -> None:
    @Pipeline(Timeout(1.0), clock=clock)
    async def call(seconds: float) -> float:
        ctx = current_context()
        assert ctx is not None and ctx.deadline == clock.now() + 1.0
        await clock_sleep(clock, seconds)
        return clock.now()

    assert await autojump(clock, call(0.25)) == 0.25
    started = clock.now()
    with pytest.raises(TimeoutRejectedError):
        await autojump(clock, call(5.0))
    assert clock.now() == started + 1.0  # cancelled at the deadline, not later
    before = lanes.calls
    for _ in range(50):
        await call(0.0)
    lane = lane_of(lanes)
    assert len(lane._entries) == 0  # each call popped itself
    if lanes.mode == "inlined":
        assert lanes.calls == before  # the inlined path served them
    else:
        assert lanes.calls == before + 50


async def test_concurrent_calls_time_out_exactly_and_hold_nothing(
    clock: ManualClock, lanes: Lanes
) -> None:
    pipeline = Pipeline(Timeout(1.0), clock=clock)

    @pipeline
    async def call(seconds: float) -> float:
        await clock_sleep(clock, seconds)
        return seconds

    async def one(seconds: float) -> str:
        try:
            await call(seconds)
        except TimeoutRejectedError:
            return f"timeout@{clock.now()}"
        return f"ok@{clock.now()}"

    durations = [0.5 if i % 2 else 2.0 for i in range(200)]
    results = await autojump(clock, asyncio.gather(*(one(d) for d in durations)))
    assert results == ["ok@0.5" if d == 0.5 else "timeout@1.0" for d in durations]
    lane = lane_of(lanes)
    assert all(entry[asyncio_rt._L_TASK] is None for entry in lane._entries)
    assert len(lane._entries) == 0


async def test_a_long_call_at_the_head_keeps_the_queue_bounded(
    clock: ManualClock, lanes: Lanes
) -> None:
    pipeline = Pipeline(Timeout(10.0), clock=clock)

    @pipeline
    async def call(seconds: float) -> float:
        await clock_sleep(clock, seconds)
        return seconds

    long = asyncio.ensure_future(call(5.0))
    await asyncio.sleep(0)  # the long call enters first and stays at the head
    for _ in range(5000):
        assert await call(0.0) == 0.0
    lane = lane_of(lanes)
    live = [e for e in lane._entries if e[asyncio_rt._L_TASK] is not None]
    assert len(live) == 1
    assert len(lane._entries) <= 2 * len(live) + 1024  # compaction bound
    assert await autojump(clock, long) == 5.0
    await call(0.0)
    assert len(lane._entries) <= 1


async def test_inner_position_uses_the_lane_too(clock: ManualClock, lanes: Lanes) -> None:
    pipeline = Pipeline(Timeout(2.0), Timeout(1.0), clock=clock)

    async def hang() -> None:
        await clock_sleep(clock, 5.0)

    with pytest.raises(TimeoutRejectedError) as info:
        await autojump(clock, pipeline.acall(hang))
    assert info.value.timeout == 1.0 and clock.now() == 1.0
    assert len(lanes.caches) == 2  # one lane per Timeout step


async def test_system_clock_lane_expires(lanes: Lanes) -> None:
    @Pipeline(Timeout(0.05))
    async def hang() -> None:
        await asyncio.sleep(10)

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TimeoutRejectedError):
        await hang()
    assert 0.04 <= loop.time() - started < 2.0


async def clock_sleep(clock: ManualClock, seconds: float) -> None:
    """Sleep in the clock's virtual time (autojump advances it timer to timer)."""
    if seconds <= 0:
        return
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    handle = clock.call_at(clock.now() + seconds, lambda: loop.call_soon_threadsafe(_wake, fut))
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
