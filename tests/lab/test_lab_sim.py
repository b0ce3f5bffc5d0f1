"""The lab's scheduler and simulated runtime: virtual time, futures, deadlines, and the
real strategies (`Retry`, `Timeout`) running unchanged on it."""

from __future__ import annotations

from typing import Any

import pytest

from buttress import Pipeline, Retry, Timeout, TimeoutRejectedError, backoff, current_context
from buttress.lab.sim import Cancelled, Future, Scheduler, sleep


def test_sleep_jumps_virtual_time_and_interleaves_in_order() -> None:
    sched = Scheduler()
    log: list[tuple[str, float]] = []

    async def worker(name: str, delays: list[float]) -> None:
        for d in delays:
            await sleep(d)
            log.append((name, sched.now))

    sched.spawn(worker("a", [1.0, 1.0, 1.0]))
    sched.spawn(worker("b", [0.5, 2.0]))
    sched.run()
    assert log == [("b", 0.5), ("a", 1.0), ("a", 2.0), ("b", 2.5), ("a", 3.0)]
    assert sched.clock.now() == 3.0


def test_run_until_stops_the_clock_there_and_close_unwinds_pending_tasks() -> None:
    sched = Scheduler()
    unwound: list[float] = []

    async def forever() -> None:
        try:
            await Future()
        finally:
            unwound.append(sched.now)

    sched.spawn(forever())
    sched.call_at(5.0, lambda _: None)
    sched.run(until=2.0)
    assert sched.now == 2.0
    assert sched.close() == 1
    assert unwound == [2.0]


def test_future_wakes_waiter_with_value_or_exception() -> None:
    sched = Scheduler()
    fut: Future = Future()
    bad: Future = Future()
    got: list[Any] = []

    async def waiter() -> None:
        got.append(await fut)
        try:
            await bad
        except KeyError as exc:
            got.append(("error", exc.args[0], sched.now))

    sched.spawn(waiter())
    sched.call_at(1.5, lambda _: sched.resolve(fut, 42))
    sched.call_at(2.5, lambda _: sched.resolve(bad, None, KeyError("k")))
    sched.run()
    assert got == [42, ("error", "k", 2.5)]


def test_future_deadline_raises_its_error_and_calls_abandon() -> None:
    sched = Scheduler()
    abandoned: list[float] = []

    class Req(Future):
        def abandon(self) -> None:
            abandoned.append(sched.now)

    req = Req(3.0, TimeoutError)
    seen: list[Any] = []

    async def waiter() -> None:
        try:
            await req
        except TimeoutError:
            seen.append(sched.now)

    sched.spawn(waiter())
    sched.call_at(4.0, lambda _: sched.resolve(req, "late"))  # ignored: nobody waits
    sched.run()
    assert seen == [3.0]
    assert abandoned == [3.0]


def test_a_reply_before_the_deadline_wins() -> None:
    sched = Scheduler()
    req = Future(3.0, TimeoutError)
    seen: list[Any] = []

    async def waiter() -> None:
        seen.append(await req)
        seen.append(sched.now)

    sched.spawn(waiter())
    sched.call_at(1.0, lambda _: sched.resolve(req, "ok"))
    sched.run()
    assert seen == ["ok", 1.0]


def _pipeline(sched: Scheduler, *strategies: Any) -> Pipeline:
    import random

    return Pipeline(*strategies, clock=sched.clock, random=random.Random(1))


def test_timeout_strategy_cancels_in_virtual_time() -> None:
    sched = Scheduler()
    p = _pipeline(sched, Timeout(2.0))
    out: list[Any] = []

    async def hang() -> None:
        await Future()

    async def client() -> None:
        try:
            await p.acall(hang)
        except TimeoutRejectedError as exc:
            out.append((sched.now, type(exc.__cause__).__name__))

    sched.spawn(client())
    sched.run()
    assert out == [(2.0, "Cancelled")]


def test_nested_timeouts_each_report_their_own_expiry() -> None:
    sched = Scheduler()
    inner = _pipeline(sched, Timeout(1.0, name="inner"))
    outer = _pipeline(sched, Timeout(5.0, name="outer"))
    out: list[Any] = []

    async def hang() -> None:
        await Future()

    async def inner_call() -> None:
        try:
            await inner.acall(hang)
        except TimeoutRejectedError as exc:
            out.append(("inner", exc.strategy, sched.now))
        await sleep(10.0)  # now the outer deadline (t=5) fires

    async def client() -> None:
        try:
            await outer.acall(inner_call)
        except TimeoutRejectedError as exc:
            out.append(("outer", exc.strategy, sched.now))

    sched.spawn(client())
    sched.run()
    assert out == [("inner", "inner", 1.0), ("outer", "outer", 5.0)]


def test_retry_sleeps_its_backoff_in_virtual_time_and_respects_the_deadline() -> None:
    sched = Scheduler()
    attempts: list[tuple[int, float]] = []
    p = _pipeline(
        sched,
        Timeout(10.0),
        Retry(on=Exception, attempts=10, backoff=backoff.constant(3.0), budget=None),
    )

    async def failing() -> None:
        ctx = current_context()
        assert ctx is not None
        attempts.append((ctx.attempt, sched.now))
        raise ConnectionError("down")

    result: list[Any] = []

    async def client() -> None:
        try:
            await p.acall(failing)
        except ConnectionError:
            result.append(sched.now)

    sched.spawn(client())
    sched.run()
    # attempts at 0, 3, 6, 9; the next wait would pass the deadline (10): give up at 9
    assert attempts == [(1, 0.0), (2, 3.0), (3, 6.0), (4, 9.0)]
    assert result == [9.0]


def test_cancellation_by_a_deadline_is_never_retried() -> None:
    sched = Scheduler()
    attempts: list[float] = []
    p = _pipeline(
        sched,
        Timeout(10.0),
        Retry(on=Exception, attempts=10, backoff=backoff.constant(1.0), budget=None),
    )

    async def hang() -> None:
        attempts.append(sched.now)
        await Future()

    result: list[Any] = []

    async def client() -> None:
        try:
            await p.acall(hang)
        except TimeoutRejectedError:
            result.append(sched.now)

    sched.spawn(client())
    sched.run()
    assert attempts == [0.0]
    assert result == [10.0]


def test_cancel_delivers_cancelled_once() -> None:
    sched = Scheduler()
    got: list[str] = []

    async def victim() -> None:
        try:
            await sleep(100.0)
        except Cancelled:
            got.append(f"cancelled at {sched.now}")
            raise

    task = sched.spawn(victim())
    sched.call_at(1.0, lambda _: sched.cancel(task))
    sched.run()
    assert got == ["cancelled at 1.0"]
    assert task.done
    assert isinstance(task.exception, Cancelled)


def test_unsupported_awaitable_is_a_clear_error() -> None:
    import types

    sched = Scheduler()

    @types.coroutine
    def odd() -> Any:
        yield "what"

    async def bad() -> None:
        await odd()

    sched.spawn(bad())
    with pytest.raises(RuntimeError, match="unsupported"):
        sched.run()


def test_sync_sleep_on_the_sim_clock_is_refused() -> None:
    sched = Scheduler()
    with pytest.raises(RuntimeError, match="acall"):
        sched.clock.sleep(1.0)


def test_waiter_woken_or_timed_out_in_virtual_time() -> None:
    sched = Scheduler()
    rt = sched.runtime
    out: list[Any] = []

    async def woken() -> None:
        w = rt.waiter()
        sched.call_at(2.0, lambda _: w.wake())
        out.append(("woken", await w.wait(5.0), sched.now))

    async def expired() -> None:
        w = rt.waiter()
        out.append(("expired", await w.wait(3.0), sched.now))
        w.wake()  # a late wake is a no-op

    async def past() -> None:
        await sleep(1.0)
        w = rt.waiter()
        out.append(("past", await w.wait(0.5), sched.now))

    sched.spawn(woken())
    sched.spawn(expired())
    sched.spawn(past())
    sched.run()
    assert sorted(out) == [("expired", False, 3.0), ("past", False, 1.0), ("woken", True, 2.0)]


def test_event_wakes_every_waiter() -> None:
    sched = Scheduler()
    ev = sched.runtime.new_event()
    out: list[float] = []

    async def waiter() -> None:
        await ev.wait()
        out.append(sched.now)

    for _ in range(3):
        sched.spawn(waiter())
    sched.call_at(4.0, lambda _: ev.set())
    sched.run()
    assert out == [4.0, 4.0, 4.0]
    assert ev.is_set()


def test_real_hedge_runs_in_virtual_time_and_cancels_the_loser() -> None:
    from buttress import Hedge

    sched = Scheduler()
    p = _pipeline(sched, Hedge(delay=0.1, max_hedged=1))
    started: list[tuple[int, float]] = []
    cancelled: list[float] = []

    async def call() -> str:
        ctx = current_context()
        assert ctx is not None
        started.append((ctx.attempt, sched.now))
        try:
            await sleep(1.0 if ctx.attempt == 1 else 0.2)  # the primary is slow
        except Cancelled:
            cancelled.append(sched.now)
            raise
        return f"attempt {ctx.attempt}"

    got: list[Any] = []

    async def client() -> None:
        got.append((await p.acall(call), sched.now))

    sched.spawn(client())
    sched.run()
    assert started == [(1, 0.0), (2, 0.1)]
    assert got == [("attempt 2", pytest.approx(0.3))]
    assert cancelled == [pytest.approx(0.3)]


def test_real_bulkhead_queues_and_rejects_in_virtual_time() -> None:
    from buttress import Bulkhead, BulkheadFullError

    sched = Scheduler()
    p = _pipeline(sched, Bulkhead(1, max_queued=1, max_wait=5.0))
    out: list[Any] = []

    async def work() -> None:
        await sleep(2.0)

    async def client(i: int) -> None:
        try:
            await p.acall(work)
            out.append((i, "ok", sched.now))
        except BulkheadFullError:
            out.append((i, "full", sched.now))

    for i in range(3):
        sched.spawn(client(i))
    sched.run()
    assert sorted(out) == [(0, "ok", 2.0), (1, "ok", 4.0), (2, "full", 0.0)]
