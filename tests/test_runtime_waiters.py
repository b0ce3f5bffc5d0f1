"""The runtime waiting primitive (`buttress._runtime.base` contract) on threads, asyncio, trio."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import trio
import trio.testing

from buttress._core.clock import SYSTEM_CLOCK
from buttress._runtime.asyncio_rt import AsyncioRuntime
from buttress._runtime.sync import SyncRuntime
from buttress._runtime.trio_rt import TrioRuntime
from buttress.testing import ManualClock

# -- threads -----------------------------------------------------------------------------------


def test_sync_wake_before_wait_returns_true_at_once() -> None:
    w = SyncRuntime(SYSTEM_CLOCK).waiter()
    w.wake()
    w.wake()  # idempotent
    assert w.wait(None) is True


def test_sync_deadline_in_the_past_returns_false_without_blocking(clock: ManualClock) -> None:
    w = SyncRuntime(clock).waiter()
    assert w.wait(clock.now()) is False
    assert w.wait(clock.now() - 1) is False


def test_sync_wake_from_another_thread() -> None:
    w = SyncRuntime(SYSTEM_CLOCK).waiter()
    t = threading.Thread(target=w.wake)
    t.start()
    assert w.wait(None) is True
    t.join()


def test_sync_manual_deadline_fires_when_another_thread_advances(clock: ManualClock) -> None:
    w = SyncRuntime(clock).waiter()
    result: list[bool] = []
    t = threading.Thread(target=lambda: result.append(w.wait(5.0)))
    t.start()
    while not clock._timers:  # the waiter registered its deadline timer
        threading.Event().wait(0.001)
    clock.advance(4.999)
    assert t.is_alive()
    clock.advance(0.001)
    t.join(5)
    assert result == [False]
    assert clock.now() == 5.0  # the waiter never moved the clock itself


@pytest.mark.realtime
def test_sync_race_workers_keep_no_finished_job() -> None:
    """A job (an attempt's closure: its function, arguments, record, Context) is released
    when it finishes, also the first job of a new worker thread, which `threading.Thread`
    would otherwise hold in its ``args`` until the worker exits (30 s idle): a hedged or
    timed-out call's arguments outlived it, and later became another test's garbage."""
    import weakref

    from buttress._runtime.sync import _WORKERS

    class Payload:
        pass

    gate = threading.Event()
    n = _WORKERS._idle + 2  # more jobs than idle workers: at least one new thread
    started = threading.Semaphore(0)
    finished = threading.Semaphore(0)
    refs = []

    def make_job() -> Any:
        payload = Payload()
        refs.append(weakref.ref(payload))

        def job() -> None:
            started.release()
            gate.wait(10)
            assert payload is not None
            finished.release()

        return job

    for _ in range(n):
        _WORKERS.submit(make_job())
    for _ in range(n):
        assert started.acquire(timeout=10)
    gate.set()
    for _ in range(n):
        assert finished.acquire(timeout=10)
    deadline = time.monotonic() + 10
    while any(r() is not None for r in refs) and time.monotonic() < deadline:
        gate.wait(0.01)  # the workers drop their frames right after the job returns
    assert [r() for r in refs] == [None] * n


def test_sync_system_deadline_times_out() -> None:
    w = SyncRuntime(SYSTEM_CLOCK).waiter()
    assert w.wait(SYSTEM_CLOCK.now() + 0.01) is False
    w.wake()  # a late wake is a harmless no-op


# -- asyncio ------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_wake_and_wait() -> None:
    w = AsyncioRuntime(SYSTEM_CLOCK).waiter()
    asyncio.get_running_loop().call_soon(w.wake)
    assert await w.wait(None) is True
    w.wake()  # idempotent after the fact


@pytest.mark.asyncio
async def test_asyncio_wake_before_wait() -> None:
    w = AsyncioRuntime(SYSTEM_CLOCK).waiter()
    w.wake()
    assert await w.wait(SYSTEM_CLOCK.now() - 1) is True  # woken wins over a past deadline


@pytest.mark.asyncio
async def test_asyncio_manual_deadline(clock: ManualClock) -> None:
    w = AsyncioRuntime(clock).waiter()
    task = asyncio.ensure_future(w.wait(2.0))
    await asyncio.sleep(0)
    clock.advance(1.999)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(0.001)
    assert await task is False
    assert all(h.cancelled or h.when <= clock.now() for _, _, h in clock._timers)


@pytest.mark.asyncio
async def test_asyncio_wake_cancels_the_deadline_timer(clock: ManualClock) -> None:
    w = AsyncioRuntime(clock).waiter()
    task = asyncio.ensure_future(w.wait(2.0))
    await asyncio.sleep(0)
    w.wake()
    assert await task is True
    assert [h.cancelled for _, _, h in clock._timers] == [True]


@pytest.mark.asyncio
async def test_asyncio_cancellation_propagates_and_later_wake_is_noop(clock: ManualClock) -> None:
    w = AsyncioRuntime(clock).waiter()
    task = asyncio.ensure_future(w.wait(10.0))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    w.wake()
    assert [h.cancelled for _, _, h in clock._timers] == [True]


@pytest.mark.asyncio
async def test_asyncio_wake_from_a_foreign_thread() -> None:
    w = AsyncioRuntime(SYSTEM_CLOCK).waiter()
    t = threading.Thread(target=w.wake)
    t.start()
    assert await w.wait(None) is True
    t.join()


@pytest.mark.realtime
@pytest.mark.asyncio
async def test_asyncio_system_deadline() -> None:
    w = AsyncioRuntime(SYSTEM_CLOCK).waiter()
    assert await w.wait(SYSTEM_CLOCK.now() + 0.01) is False


def test_asyncio_wake_after_loop_closed_is_silent() -> None:
    holder: list[object] = []

    async def make() -> None:
        holder.append(AsyncioRuntime(SYSTEM_CLOCK).waiter())

    asyncio.run(make())
    w = holder[0]
    t = threading.Thread(target=w.wake)  # type: ignore[attr-defined]
    t.start()
    t.join()


# -- trio ----------------------------------------------------------------------------------------


def test_trio_wake_timeout_and_cancel() -> None:
    async def main() -> None:
        rt = TrioRuntime(SYSTEM_CLOCK)
        w = rt.waiter()
        w.wake()
        assert await w.wait(None) is True

        w2 = rt.waiter()
        assert await w2.wait(SYSTEM_CLOCK.now() + 5.0) is False  # autojump clock

        w3 = rt.waiter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.to_thread.run_sync, w3.wake)
            assert await w3.wait(None) is True

        w4 = rt.waiter()
        with trio.CancelScope() as scope:
            scope.cancel()
            await w4.wait(None)
        assert scope.cancelled_caught
        w4.wake()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_trio_manual_clock_deadline() -> None:
    clock = ManualClock()

    async def main() -> None:
        w = TrioRuntime(clock).waiter()
        result: list[bool] = []

        async def waiting() -> None:
            result.append(await w.wait(3.0))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiting)
            await trio.testing.wait_all_tasks_blocked()
            clock.advance(2.5)
            await trio.testing.wait_all_tasks_blocked()
            assert result == []
            clock.advance(0.5)
        assert result == [False]

    trio.run(main)
