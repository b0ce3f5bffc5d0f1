"""Bulkhead: admission, FIFO queue, max_wait and deadlines, races, keys, threads and tasks."""

from __future__ import annotations

import asyncio
import random
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing

from buttress import (
    Bulkhead,
    BulkheadFullError,
    ConfigurationError,
    Key,
    Pipeline,
    RejectedError,
    Retry,
    Timeout,
    TimeoutRejectedError,
    scope,
)
from buttress._runtime.asyncio_rt import AsyncioRuntime
from buttress._runtime.detect import RUNTIME_OVERRIDE
from buttress._runtime.sync import SyncRuntime
from buttress.events import CallRejected
from buttress.testing import ManualClock, RecordingListener

TENANT = Key[Any]("tenant")

# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "parameter"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"max_concurrent": 1.5}, "max_concurrent"),
        ({"max_concurrent": True}, "max_concurrent"),
        ({"max_concurrent": 1, "max_queued": -1}, "max_queued"),
        ({"max_concurrent": 1, "max_wait": -0.1}, "max_wait"),
        ({"max_concurrent": 1, "max_wait": float("nan")}, "max_wait"),
        ({"max_concurrent": 1, "max_wait": timedelta(seconds=-1)}, "max_wait"),
        ({"max_concurrent": 1, "key": "tenant"}, "key"),
        ({"max_concurrent": 1, "max_keys": 0}, "max_keys"),
        ({"max_concurrent": 1, "name": ""}, "name"),
    ],
)
def test_bad_settings_raise_configuration_error(kwargs: dict[str, Any], parameter: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Bulkhead(**kwargs)
    assert info.value.parameter == parameter
    assert parameter in str(info.value)


def test_valid_settings_are_kept() -> None:
    b = Bulkhead(4, max_queued=2, max_wait=timedelta(milliseconds=250), name="db")
    assert (b.max_concurrent, b.max_queued, b.max_wait, b.name) == (4, 2, 0.25, "db")
    assert "Bulkhead(4" in repr(b)


# -- sync -------------------------------------------------------------------------------------


def test_sync_happy_path_returns_slot_on_success_and_error() -> None:
    b = Bulkhead(2)
    p = Pipeline(b)
    seen: list[int] = []
    assert p.call(lambda: seen.append(b.snapshot().in_use) or 7) == 7
    with pytest.raises(KeyError):
        p.call(lambda: {}["x"])
    assert seen == [1]
    snap = b.snapshot()
    assert (snap.in_use, snap.queued, snap.available) == (0, 0, 2)


def test_sync_nested_calls_fill_the_bulkhead_and_reject(events: RecordingListener) -> None:
    b = Bulkhead(2, name="pool")
    p = Pipeline(b, name="svc", listeners=[events])

    def inner() -> int:
        return p.call(lambda: 1)

    with pytest.raises(BulkheadFullError) as info:
        p.call(lambda: p.call(inner))  # the third nested call finds both slots taken
    err = info.value
    assert isinstance(err, RejectedError)
    assert err.strategy == "pool"
    assert err.retry_after is None  # no saturated releases observed yet
    assert "2/2 running" in str(err)
    [event] = events.of_type(CallRejected)
    assert (event.reason, event.strategy, event.pipeline, event.key) == (
        "bulkhead_full",
        "pool",
        "svc",
        None,
    )
    assert b.snapshot().in_use == 0


def test_sync_cancellation_like_base_exceptions_release_the_slot() -> None:
    b = Bulkhead(1)
    p = Pipeline(b)

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        p.call(interrupt)
    assert b.snapshot().in_use == 0


def _wait_until(predicate: Callable[[], bool]) -> None:
    stop = threading.Event()
    for _ in range(5000):
        if predicate():
            return
        stop.wait(0.001)
    raise AssertionError("condition not reached")


def test_sync_fifo_queue_across_threads() -> None:
    b = Bulkhead(1, max_queued=5)
    p = Pipeline(b)
    gate = threading.Event()
    order: list[int] = []
    holder = threading.Thread(target=lambda: p.call(gate.wait))
    holder.start()
    _wait_until(lambda: b.snapshot().in_use == 1)
    threads = []
    for i in range(5):
        t = threading.Thread(target=p.call, args=(order.append, i))
        t.start()
        _wait_until(lambda i=i: b.snapshot().queued == i + 1)  # type: ignore[misc]
        threads.append(t)
    with pytest.raises(BulkheadFullError):  # queue full: rejected at once
        p.call(order.append, 99)
    gate.set()
    for t in [holder, *threads]:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


def test_sync_max_wait_expires_on_the_manual_clock(clock: ManualClock) -> None:
    b = Bulkhead(1, max_queued=1, max_wait=2.0)
    p = Pipeline(b, clock=clock)
    gate = threading.Event()
    holder = threading.Thread(target=lambda: p.call(gate.wait))
    holder.start()
    _wait_until(lambda: b.snapshot().in_use == 1)
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            p.call(lambda: None)
        except BulkheadFullError as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    _wait_until(lambda: b.snapshot().queued == 1)
    clock.advance(1.999)
    assert t.is_alive()
    clock.advance(0.001)
    t.join(5)
    assert len(errors) == 1
    assert b.snapshot().queued == 0
    gate.set()
    holder.join(5)
    assert b.snapshot().in_use == 0


def test_sync_deadline_already_passed_rejects_with_reason_deadline(
    clock: ManualClock, events: RecordingListener
) -> None:
    b = Bulkhead(1, max_queued=3)
    p = Pipeline(b, clock=clock, listeners=[events])
    with scope(timeout=1.0, clock=clock):
        clock.advance(1.0)

        def nested() -> None:
            p.call(lambda: None)

        with pytest.raises(BulkheadFullError, match="deadline"):
            p.call(nested)
    assert [e.reason for e in events.of_type(CallRejected)] == ["deadline"]
    assert b.snapshot().queued == 0


# -- scripted runtimes: construct the grant races deterministically ---------------------------


class _GrantingSyncWaiter:
    """Real thread waiter whose wait() first lets ``on_wait`` grant it, then reports timeout."""

    def __init__(self, inner: Any, on_wait: Callable[[], None]) -> None:
        self.inner = inner
        self.on_wait = on_wait

    def wake(self) -> None:
        self.inner.wake()

    def wait(self, deadline: float | None) -> bool:
        self.on_wait()  # the holder releases: this waiter is granted the slot right now
        return False  # ... but the deadline "passed" at the very same moment


class _ScriptedSyncRuntime(SyncRuntime):
    def __init__(self, clock: Any, on_wait: Callable[[], None]) -> None:
        super().__init__(clock)
        self.on_wait = on_wait

    def waiter(self) -> Any:
        return _GrantingSyncWaiter(super().waiter(), self.on_wait)


def test_sync_granted_waiter_that_times_out_passes_the_slot_to_the_next(clock: ManualClock) -> None:
    b = Bulkhead(1, max_queued=2, max_wait=1.0)
    p = Pipeline(b, clock=clock)
    pool = b._pool
    assert pool.try_acquire()
    behind: list[Any] = []

    def on_wait() -> None:
        # while our caller (first in line) waits, a second caller queues behind it, then
        # the holder releases: the slot is granted to our caller, whose wait times out
        ticket = pool.enqueue(SyncRuntime(clock).waiter())
        behind.append(ticket)
        pool.release(clock.now)

    p.env._sync_rt = _ScriptedSyncRuntime(clock, on_wait)
    with pytest.raises(BulkheadFullError):
        p.call(lambda: None)
    [ticket] = behind
    assert ticket.state == 1  # the granted slot was handed on, not lost
    assert (pool.in_use, pool.queued) == (1, 0)
    pool.release(clock.now)
    assert (pool.in_use, pool.queued) == (0, 0)


# -- asyncio ----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_asyncio_happy_path_and_errors_release() -> None:
    b = Bulkhead(3)
    p = Pipeline(b)

    async def ok() -> int:
        assert b.snapshot().in_use == 1
        return 5

    async def boom() -> None:
        raise ValueError

    assert await p.acall(ok) == 5
    with pytest.raises(ValueError):
        await p.acall(boom)
    assert b.snapshot().in_use == 0


@pytest.mark.asyncio
async def test_asyncio_fifo_order_and_max_queued(events: RecordingListener) -> None:
    b = Bulkhead(1, max_queued=4)
    p = Pipeline(b, listeners=[events])
    gate = asyncio.Event()
    order: list[int] = []

    async def hold() -> None:
        await gate.wait()

    async def work(i: int) -> None:
        order.append(i)
        await asyncio.sleep(0)

    holder = asyncio.ensure_future(p.acall(hold))
    await asyncio.sleep(0)
    tasks = []
    for i in range(4):
        tasks.append(asyncio.ensure_future(p.acall(work, i)))
        await asyncio.sleep(0)
    assert b.snapshot().queued == 4
    with pytest.raises(BulkheadFullError):
        await p.acall(work, 99)
    gate.set()
    await asyncio.gather(holder, *tasks)
    assert order == [0, 1, 2, 3]
    assert [e.reason for e in events.of_type(CallRejected)] == ["bulkhead_full"]
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


@pytest.mark.asyncio
async def test_asyncio_newcomer_never_barges_past_a_granted_waiter() -> None:
    b = Bulkhead(1, max_queued=2)
    p = Pipeline(b)
    gate = asyncio.Event()
    order: list[str] = []
    seen: list[Any] = []

    async def hold() -> None:
        await gate.wait()

    async def mark(tag: str) -> None:
        order.append(tag)

    async def holder() -> None:
        await p.acall(hold)
        # the slot now belongs to the (not yet running) waiter: a newcomer cannot take it
        seen.append((b.snapshot().in_use, b._pool.try_acquire()))
        newcomer.append(asyncio.ensure_future(p.acall(mark, "newcomer")))

    newcomer: list[asyncio.Future[Any]] = []
    h = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    waiter = asyncio.ensure_future(p.acall(mark, "waiter"))
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(h, waiter)
    await newcomer[0]
    assert seen == [(1, False)]
    assert order == ["waiter", "newcomer"]


@pytest.mark.asyncio
async def test_asyncio_max_wait_expiry_exact(clock: ManualClock, events: RecordingListener) -> None:
    b = Bulkhead(1, max_queued=1, max_wait=2.0)
    p = Pipeline(b, clock=clock, listeners=[events])
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    async def quick() -> int:
        return 1

    holder = asyncio.ensure_future(p.acall(hold))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(p.acall(quick))
    await asyncio.sleep(0)
    clock.advance(1.999)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.001)
    with pytest.raises(BulkheadFullError, match="no slot within max_wait=2s"):
        await waiting
    assert [(e.reason, e.time) for e in events.of_type(CallRejected)] == [("bulkhead_full", 2.0)]
    assert b.snapshot().queued == 0
    gate.set()
    await holder
    assert b.snapshot().in_use == 0


@pytest.mark.asyncio
async def test_asyncio_wait_is_bounded_by_the_context_deadline(
    clock: ManualClock, events: RecordingListener
) -> None:
    b = Bulkhead(1, max_queued=1, max_wait=None)  # None: as long as the deadline allows
    p = Pipeline(b, clock=clock, listeners=[events])
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    holder = asyncio.ensure_future(p.acall(hold))
    await asyncio.sleep(0)

    async def bounded() -> None:
        with scope(timeout=3.0, clock=clock):
            await p.acall(asyncio.sleep, 0)

    waiting = asyncio.ensure_future(bounded())
    await asyncio.sleep(0)
    clock.advance(2.5)
    await asyncio.sleep(0)
    assert not waiting.done()
    clock.advance(0.5)
    with pytest.raises(BulkheadFullError, match="deadline"):
        await waiting
    assert [e.reason for e in events.of_type(CallRejected)] == ["deadline"]
    gate.set()
    await holder
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


@pytest.mark.asyncio
async def test_asyncio_deadline_earlier_than_max_wait_wins(clock: ManualClock) -> None:
    b = Bulkhead(1, max_queued=1, max_wait=10.0)
    p = Pipeline(b, clock=clock)
    assert b._pool.try_acquire()

    async def bounded() -> None:
        with scope(timeout=1.0, clock=clock):
            await p.acall(asyncio.sleep, 0)

    waiting = asyncio.ensure_future(bounded())
    await asyncio.sleep(0)
    clock.advance(1.0)
    with pytest.raises(BulkheadFullError, match="deadline"):
        await waiting
    b._pool.release(clock.now)


@pytest.mark.asyncio
async def test_asyncio_outer_timeout_cancels_a_waiter_cleanly() -> None:
    clock = ManualClock()
    b = Bulkhead(1, max_queued=1)
    p = Pipeline(Timeout(1.0), b, clock=clock)
    assert b._pool.try_acquire()

    async def quick() -> None:
        return None

    waiting = asyncio.ensure_future(p.acall(quick))
    await asyncio.sleep(0)
    assert b.snapshot().queued == 1
    clock.advance(1.0)
    with pytest.raises((TimeoutRejectedError, BulkheadFullError)):
        await waiting
    assert b.snapshot().queued == 0
    b._pool.release(clock.now)
    assert b.snapshot().in_use == 0


@pytest.mark.asyncio
async def test_asyncio_cancel_at_the_moment_of_grant_hands_the_slot_on() -> None:
    """The holder releases (granting W), then cancels W before W ever runs."""
    b = Bulkhead(1, max_queued=2)
    p = Pipeline(b)
    gate = asyncio.Event()
    ran: list[str] = []

    async def hold() -> None:
        await gate.wait()

    async def work(tag: str) -> None:
        ran.append(tag)

    async def holder() -> None:
        await p.acall(hold)  # on return, the slot was granted to w (still asleep)
        assert b.snapshot().in_use == 1
        w.cancel()  # ... and w is cancelled at that very moment

    h = asyncio.ensure_future(holder())
    await asyncio.sleep(0)
    w = asyncio.ensure_future(p.acall(work, "w"))
    await asyncio.sleep(0)
    x = asyncio.ensure_future(p.acall(work, "x"))
    await asyncio.sleep(0)
    assert b.snapshot().queued == 2
    gate.set()
    await h
    with pytest.raises(asyncio.CancelledError):
        await w
    await x
    assert ran == ["x"]  # w's granted slot went to x
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


class _TimeoutAtGrantRuntime(AsyncioRuntime):
    """asyncio runtime whose waiter is granted while its deadline 'fires' (deterministic)."""

    def __init__(self, clock: Any, on_wait: Callable[[], None]) -> None:
        super().__init__(clock)
        self.on_wait = on_wait

    def waiter(self) -> Any:
        inner = super().waiter()
        on_wait = self.on_wait

        class W:
            def wake(self) -> None:
                inner.wake()

            async def wait(self, deadline: float | None) -> bool:
                on_wait()
                return False

        return W()


@pytest.mark.asyncio
async def test_asyncio_timeout_at_the_moment_of_grant_hands_the_slot_on(
    clock: ManualClock,
) -> None:
    b = Bulkhead(1, max_queued=2, max_wait=1.0)
    p = Pipeline(b, clock=clock)
    pool = b._pool
    assert pool.try_acquire()
    behind: list[Any] = []

    def on_wait() -> None:
        behind.append(pool.enqueue(AsyncioRuntime(clock).waiter()))
        pool.release(clock.now)  # grants our caller, whose deadline fires together

    token = RUNTIME_OVERRIDE.set(_TimeoutAtGrantRuntime(clock, on_wait))
    try:
        with pytest.raises(BulkheadFullError):
            await p.acall(asyncio.sleep, 0)
    finally:
        RUNTIME_OVERRIDE.reset(token)
    assert behind[0].state == 1
    assert (pool.in_use, pool.queued) == (1, 0)
    pool.release(clock.now)
    assert (pool.in_use, pool.queued) == (0, 0)


@pytest.mark.asyncio
async def test_asyncio_waiter_woken_by_a_sync_thread_release() -> None:
    b = Bulkhead(1, max_queued=1)
    p = Pipeline(b)
    gate = threading.Event()
    entered = threading.Event()

    def hold() -> None:
        entered.set()
        gate.wait(5)

    thread = threading.Thread(target=p.call, args=(hold,))
    thread.start()
    await asyncio.get_running_loop().run_in_executor(None, entered.wait, 5)

    async def quick() -> str:
        return "ran"

    waiting = asyncio.ensure_future(p.acall(quick))
    await asyncio.sleep(0)
    assert b.snapshot().queued == 1
    gate.set()  # the thread's release wakes the task through call_soon_threadsafe
    assert await asyncio.wait_for(waiting, 5) == "ran"
    thread.join(5)
    assert b.snapshot().in_use == 0


@pytest.mark.asyncio
async def test_retry_after_estimate_from_saturated_releases(
    clock: ManualClock, events: RecordingListener
) -> None:
    b = Bulkhead(1, max_queued=1)
    p = Pipeline(b, clock=clock, listeners=[events])
    gates = [asyncio.Event() for _ in range(4)]

    async def hold(i: int) -> None:
        await gates[i].wait()

    tasks = [asyncio.ensure_future(p.acall(hold, 0)), asyncio.ensure_future(p.acall(hold, 1))]
    await asyncio.sleep(0)
    assert b.snapshot().retry_after is None
    clock.advance(1.0)
    gates[0].set()
    await tasks[0]  # release at t=1 while full: handed to task 1
    tasks.append(asyncio.ensure_future(p.acall(hold, 2)))
    await asyncio.sleep(0)
    clock.advance(2.0)
    gates[1].set()
    await tasks[1]  # release at t=3 while full: one interval of 2.0 s observed
    assert b.snapshot().retry_after == 2.0
    tasks.append(asyncio.ensure_future(p.acall(hold, 3)))
    await asyncio.sleep(0)
    with pytest.raises(BulkheadFullError) as info:  # 1 running, 1 queued: full
        await p.acall(hold, 0)
    assert info.value.retry_after == 2.0
    assert events.of_type(CallRejected)[0].retry_after == 2.0
    gates[2].set()
    gates[3].set()
    await asyncio.gather(*tasks)
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


@pytest.mark.asyncio
async def test_retry_honours_bulkhead_retry_after(clock: ManualClock) -> None:
    b = Bulkhead(1)
    b._pool.interval = 0.5  # as if measured
    assert b._pool.try_acquire()
    p = Pipeline(Retry(on=BulkheadFullError, attempts=2, backoff=0.0), b, clock=clock)
    with pytest.raises(BulkheadFullError):
        await p.acall(asyncio.sleep, 0)
    assert clock.sleeps == [0.5]  # the retry waited retry_after, not its zero backoff
    b._pool.release(clock.now)


# -- stress -----------------------------------------------------------------------------------


def test_threads_stress_never_exceed_max_concurrent() -> None:
    limit = 3
    b = Bulkhead(limit, max_queued=3, max_wait=None)
    p = Pipeline(b)
    lock = threading.Lock()
    active = [0]
    peak = [0]
    outcomes = {"ok": 0, "error": 0, "rejected": 0}
    violations: list[int] = []

    def work(rng: random.Random) -> None:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] > limit:
                violations.append(active[0])
            if b.snapshot().in_use > limit:
                violations.append(-1)
        try:
            for _ in range(rng.randrange(50)):
                pass
            if rng.random() < 0.2:
                raise RuntimeError("boom")
        finally:
            with lock:
                active[0] -= 1

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(400):
            try:
                p.call(work, rng)
                key = "ok"
            except RuntimeError:
                key = "error"
            except BulkheadFullError:
                key = "rejected"
            with lock:
                outcomes[key] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        sys.setswitchinterval(old)
    assert violations == []
    assert sum(outcomes.values()) == 8 * 400
    assert 1 <= peak[0] <= limit
    snap = b.snapshot()
    assert (snap.in_use, snap.queued) == (0, 0)


@pytest.mark.asyncio
async def test_asyncio_stress_10000_tasks_with_cancellations() -> None:
    limit = 50
    b = Bulkhead(limit, max_queued=4000, max_wait=0.5)
    p = Pipeline(b)
    rng = random.Random(7)
    active = [0]
    peak = [0]
    violations: list[int] = []

    async def work(steps: int, fail: bool) -> None:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        if active[0] > limit or b.snapshot().in_use > limit:
            violations.append(active[0])
        try:
            for _ in range(steps):
                await asyncio.sleep(0)
            if fail:
                raise RuntimeError("boom")
        finally:
            active[0] -= 1

    async def one(steps: int, fail: bool) -> str:
        try:
            await p.acall(work, steps, fail)
        except RuntimeError:
            return "error"
        except BulkheadFullError:
            return "rejected"
        return "ok"

    tasks = [
        asyncio.ensure_future(one(rng.randrange(5), rng.random() < 0.1)) for _ in range(10_000)
    ]
    for _ in range(30):
        await asyncio.sleep(0)
        for t in rng.sample(tasks, 40):
            t.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kinds = {
        "cancelled": sum(isinstance(r, asyncio.CancelledError) for r in results),
        "ok": results.count("ok"),
        "error": results.count("error"),
        "rejected": results.count("rejected"),
    }
    assert sum(kinds.values()) == 10_000
    assert kinds["cancelled"] > 0
    assert kinds["ok"] > 0
    assert kinds["error"] > 0
    assert violations == []
    assert peak[0] == limit  # the limit was actually reached
    snap = b.snapshot()
    assert (snap.in_use, snap.queued) == (0, 0)
    assert not b._pool._queue


# -- per-key partitions -----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_keyed_partitions_are_independent(events: RecordingListener) -> None:
    b = Bulkhead(1, key=lambda ctx: ctx.get(TENANT), max_keys=100)
    p = Pipeline(b, listeners=[events])
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    async def quick() -> str:
        return "ok"

    async def as_tenant(tenant: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        with scope(properties={TENANT: tenant}):
            return await p.acall(fn)

    a = asyncio.ensure_future(as_tenant("a", hold))
    await asyncio.sleep(0)
    assert await as_tenant("b", quick) == "ok"  # another tenant is unaffected
    with pytest.raises(BulkheadFullError, match="'a'"):
        await as_tenant("a", quick)
    [event] = events.of_type(CallRejected)
    assert event.key == "a"
    assert b.snapshot("a").in_use == 1
    assert b.snapshot("zzz").in_use == 0
    total = b.snapshot()
    assert (total.in_use, total.partitions) == (1, 2)
    gate.set()
    await a
    assert b.snapshot().in_use == 0


def test_keyed_busy_partition_is_never_evicted() -> None:
    b = Bulkhead(1, key=lambda ctx: ctx.get(TENANT), max_keys=4)
    p = Pipeline(b)

    def as_tenant(tenant: str, fn: Callable[[], Any]) -> Any:
        with scope(properties={TENANT: tenant}):
            return p.call(fn)

    def flood_then_retry_a() -> None:
        for i in range(50):
            as_tenant(f"t{i}", lambda: None)
        # "a" still holds its slot: it must still be tracked, so a second call is rejected
        with pytest.raises(BulkheadFullError):
            as_tenant("a", lambda: None)

    as_tenant("a", flood_then_retry_a)
    assert b._partitions is not None
    assert len(b._partitions) <= 4
    assert b._partitions.evictions >= 46


def test_keyed_memory_stays_bounded() -> None:
    b = Bulkhead(2, key=lambda ctx: ctx.get(TENANT), max_keys=100)
    p = Pipeline(b)
    for i in range(5000):
        with scope(properties={TENANT: i}):
            p.call(lambda: None)
    assert b._partitions is not None
    assert len(b._partitions) == 100


# -- trio -------------------------------------------------------------------------------------


def test_trio_fifo_max_wait_and_cancellation() -> None:
    b = Bulkhead(1, max_queued=3, max_wait=5.0)
    p = Pipeline(b)
    order: list[str] = []

    async def main() -> None:
        gate = trio.Event()

        async def hold() -> None:
            await gate.wait()

        async def mark(tag: str) -> None:
            order.append(tag)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.acall, hold)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(p.acall, mark, "1")
            await trio.testing.wait_all_tasks_blocked()
            cancel_me = trio.CancelScope()

            async def cancelled_waiter() -> None:
                with cancel_me:
                    await p.acall(mark, "cancelled")

            nursery.start_soon(cancelled_waiter)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(p.acall, mark, "2")
            await trio.testing.wait_all_tasks_blocked()
            assert b.snapshot().queued == 3
            cancel_me.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert b.snapshot().queued == 2
            gate.set()
        assert order == ["1", "2"]

        # max_wait expiry on trio's (mock, autojumping) clock
        gate2 = trio.Event()

        async def hold2() -> None:
            await gate2.wait()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.acall, hold2)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            with pytest.raises(BulkheadFullError):
                await p.acall(mark, "late")
            assert trio.current_time() - start == pytest.approx(5.0, abs=0.1)
            gate2.set()
        assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_trio_stress_never_exceeds_limit() -> None:
    limit = 5
    b = Bulkhead(limit, max_queued=500)
    p = Pipeline(b)
    rng = random.Random(3)
    active = [0]
    violations: list[int] = []

    async def work(steps: int) -> None:
        active[0] += 1
        if active[0] > limit:
            violations.append(active[0])
        try:
            for _ in range(steps):
                await trio.lowlevel.checkpoint()
        finally:
            active[0] -= 1

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            scopes = []
            for _ in range(500):
                cs = trio.CancelScope()
                scopes.append(cs)

                async def one(cs: trio.CancelScope = cs) -> None:
                    with cs:
                        await p.acall(work, rng.randrange(4))

                nursery.start_soon(one)
            for _ in range(5):
                await trio.lowlevel.checkpoint()
                for cs in rng.sample(scopes, 20):
                    cs.cancel()

    trio.run(main)
    assert violations == []
    assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)


@pytest.mark.asyncio
async def test_in_use_and_queued_gauges() -> None:
    from buttress._core.gauges import gauge_readings

    b = Bulkhead(1, max_queued=2, name="gauge-bh")
    p = Pipeline(b, name="gauged")
    gate = asyncio.Event()

    async def hold() -> None:
        await gate.wait()

    tasks = [asyncio.ensure_future(p.acall(hold)) for _ in range(3)]
    await asyncio.sleep(0)

    def readings() -> dict[str, float]:
        return {
            metric: value
            for metric, value, attrs in gauge_readings()
            if attrs["strategy"] == "gauge-bh" and attrs["pipeline"] == "gauged"
        }

    assert readings() == {"buttress.bulkhead.in_use": 1.0, "buttress.bulkhead.queued": 2.0}
    gate.set()
    await asyncio.gather(*tasks)
    assert readings() == {"buttress.bulkhead.in_use": 0.0, "buttress.bulkhead.queued": 0.0}


def test_trio_cancel_at_the_moment_of_grant_never_leaks() -> None:
    b = Bulkhead(1, max_queued=2)
    p = Pipeline(b)
    ran: list[str] = []

    async def main() -> None:
        gate = trio.Event()
        cancel_w = trio.CancelScope()

        async def hold() -> None:
            await gate.wait()

        async def work(tag: str) -> None:
            ran.append(tag)
            await trio.lowlevel.checkpoint()

        async def holder() -> None:
            await p.acall(hold)  # the release granted w's slot; w has not run yet
            cancel_w.cancel()  # ... and w is cancelled at that very moment

        async def w() -> None:
            with cancel_w:
                await p.acall(work, "w")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(holder)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(w)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(p.acall, work, "x")
            await trio.testing.wait_all_tasks_blocked()
            assert b.snapshot().queued == 2
            gate.set()
        # trio delivers a wake-up that raced a cancellation first: w gets its slot, is
        # cancelled at its next checkpoint, and the slot still goes on to x
        assert "x" in ran
        assert (b.snapshot().in_use, b.snapshot().queued) == (0, 0)

    trio.run(main)
